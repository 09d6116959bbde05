"""Who may share what: role ceilings, guests, links and grants that die with their maker,
leaving, and the pages that must answer bad input with a message instead of a 500."""

from __future__ import annotations

import io
import logging
import re
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from kernels.models import KernelServer
from notebooks import access as acl
from notebooks import actions, sharing
from notebooks.models import Grant, Invitation, LinkJoin, Role, ShareLink

pytestmark = pytest.mark.django_db(transaction=True)


def access_of(user, notebook, action=acl.Action.VIEW):
    return acl.access_notebook(acl.principal_from_session(user, None), notebook.pk, action)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


@pytest.fixture
def sharing_editor(notebook, bob):
    """Bob edits Alice's notebook, and people who can edit may share it."""
    notebook.editors_can_share = True
    notebook.save()
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR, granted_by=notebook.owner)
    return bob


def test_an_editor_cannot_make_themselves_owner(notebook, sharing_editor):
    grant = Grant.objects.get(user=sharing_editor)
    response = signed_in(sharing_editor).post(
        f"/n/{notebook.pk}/share", {"action": "change_role", "grant_id": grant.pk, "role": "owner"}
    )
    assert Grant.objects.get(pk=grant.pk).role == Role.EDITOR
    assert "above your own" in messages_of(response)


def test_an_editor_cannot_mint_a_runner_link_or_invite_a_runner(notebook, sharing_editor):
    client = signed_in(sharing_editor)
    client.post(f"/n/{notebook.pk}/share", {"action": "create_link", "label": "r", "role": "runner"})
    assert not ShareLink.objects.filter(label="r").exists()
    client.post(
        f"/n/{notebook.pk}/share", {"action": "invite", "emails": "bob@example.com", "role": "runner"}
    )
    client.post(
        f"/n/{notebook.pk}/share", {"action": "invite", "emails": "new@example.com", "role": "runner"}
    )
    assert Grant.objects.get(user=sharing_editor).role == Role.EDITOR
    assert not Invitation.objects.exists()
    with pytest.raises(acl.Refused) as refused:
        sharing.create_link(access_of(sharing_editor, notebook), label="x", role=Role.RUNNER)
    assert refused.value.code == "above_own_role"


def test_an_editor_cannot_change_or_remove_other_peoples_grants(notebook, sharing_editor, charlie):
    co_owner = Grant.objects.create(
        notebook=notebook, user=charlie, role=Role.OWNER, granted_by=notebook.owner
    )
    client = signed_in(sharing_editor)
    client.post(f"/n/{notebook.pk}/share", {"action": "remove_grant", "grant_id": co_owner.pk})
    client.post(
        f"/n/{notebook.pk}/share", {"action": "change_role", "grant_id": co_owner.pk, "role": "viewer"}
    )
    assert Grant.objects.get(pk=co_owner.pk).role == Role.OWNER
    with pytest.raises(acl.Refused) as refused:
        sharing.remove_grant(access_of(sharing_editor, notebook), co_owner.pk)
    assert refused.value.code == "owner_only"


def test_an_editor_may_share_up_to_their_own_role(notebook, sharing_editor, charlie):
    client = signed_in(sharing_editor)
    client.post(
        f"/n/{notebook.pk}/share", {"action": "invite", "emails": "charlie@example.com", "role": "editor"}
    )
    client.post(f"/n/{notebook.pk}/share", {"action": "create_link", "label": "e", "role": "editor"})
    assert Grant.objects.get(user=charlie).role == Role.EDITOR
    assert ShareLink.objects.get(label="e").role == Role.EDITOR


def test_the_owners_kernel_servers_stay_the_owners(notebook, alice, charlie):
    KernelServer.objects.create(owner=alice, name="alice-private", url="http://127.0.0.1:1")
    Grant.objects.create(notebook=notebook, user=charlie, role=Role.OWNER, granted_by=alice)
    response = signed_in(charlie).get(f"/n/{notebook.pk}/kernel/settings")
    assert response.status_code == 403
    assert "alice-private" not in response.content.decode()
    assert signed_in(alice).get(f"/n/{notebook.pk}/kernel/settings").status_code == 200


def test_a_link_guest_never_shares(notebook, sharing_editor):
    _, token = sharing.create_link(
        access_of(notebook.owner, notebook), label="ed", role=Role.EDITOR, require_login=False
    )
    guest = Client()
    guest.get(f"/s/{token}", follow=True)
    assert guest.get(f"/n/{notebook.pk}/").status_code == 200
    page = guest.get(f"/n/{notebook.pk}/share")
    assert page.status_code == 403
    assert "bob@example.com" not in page.content.decode()
    guest.post(f"/n/{notebook.pk}/share", {"action": "create_link", "label": "g", "role": "viewer"})
    assert not ShareLink.objects.filter(label="g").exists()


def test_a_link_dies_with_its_makers_access_and_is_capped_by_their_role(notebook, sharing_editor):
    _, token = sharing.create_link(
        access_of(sharing_editor, notebook), label="b", role=Role.EDITOR, require_login=False
    )
    guest = Client()
    guest.get(f"/s/{token}", follow=True)
    guest_principal = acl.principal_from_session(None, guest.session)
    assert acl.resolve(guest_principal, notebook).role == Role.EDITOR
    grant = Grant.objects.get(user=sharing_editor)
    sharing.change_role(access_of(notebook.owner, notebook), grant.pk, Role.VIEWER)
    assert acl.resolve(guest_principal, notebook).role == Role.VIEWER
    sharing.remove_grant(access_of(notebook.owner, notebook), grant.pk)
    assert acl.resolve(guest_principal, notebook) is None
    assert guest.get(f"/n/{notebook.pk}/").status_code == 302


def test_a_grant_dies_with_its_granters_access(notebook, sharing_editor, charlie):
    sharing.invite(access_of(sharing_editor, notebook), ["charlie@example.com"], Role.EDITOR)
    assert access_of(charlie, notebook).role == Role.EDITOR
    bob_grant = Grant.objects.get(user=sharing_editor)
    sharing.remove_grant(access_of(notebook.owner, notebook), bob_grant.pk)
    assert acl.resolve(acl.principal_from_session(charlie, None), notebook) is None


def test_links_and_grants_die_with_their_makers_account_and_the_owners_do_not(
    notebook, sharing_editor, charlie
):
    """A deactivated account has no access (its pages sign out, its sockets close): what it
    shared dies with it, as with a removal. The owner's account deactivated leaves the notebook
    to those it was shared with."""
    _, token = sharing.create_link(
        access_of(sharing_editor, notebook), label="b", role=Role.EDITOR, require_login=False
    )
    sharing.invite(access_of(sharing_editor, notebook), ["charlie@example.com"], Role.EDITOR)
    _, owners_token = sharing.create_link(
        access_of(notebook.owner, notebook), label="o", role=Role.VIEWER, require_login=False
    )
    guest = Client()
    guest.get(f"/s/{token}", follow=True)
    guest.get(f"/s/{owners_token}", follow=True)
    guest_principal = acl.principal_from_session(None, guest.session)
    assert acl.resolve(guest_principal, notebook).role == Role.EDITOR
    User.objects.filter(pk=sharing_editor.pk).update(is_active=False)
    assert acl.resolve(guest_principal, notebook).role == Role.VIEWER  # the owner's link alone
    assert acl.resolve(acl.principal_from_session(charlie, None), notebook) is None
    User.objects.filter(pk=notebook.owner_id).update(is_active=False)
    assert acl.resolve(guest_principal, notebook).role == Role.VIEWER


def test_leaving_needs_access_and_says_nothing_to_strangers(notebook, charlie):
    response = signed_in(charlie).post(f"/n/{notebook.pk}/leave")
    assert response.status_code in (403, 404)
    assert notebook.title not in response.content.decode()
    assert not AuditEvent.objects.filter(actor=charlie).exists()


def test_after_leaving_the_session_keeps_no_link_access(notebook, bob):
    _, token = sharing.create_link(access_of(notebook.owner, notebook), label="s", role=Role.EDITOR)
    client = signed_in(bob)
    client.get(f"/s/{token}", follow=True)
    assert client.get(f"/n/{notebook.pk}/").status_code == 200
    client.post(f"/n/{notebook.pk}/leave")
    assert not LinkJoin.objects.filter(user=bob).exists()
    assert client.get(f"/n/{notebook.pk}/").status_code == 403


def test_a_revoked_link_leaves_shared_with_me(notebook, bob):
    link, token = sharing.create_link(access_of(notebook.owner, notebook), label="s", role=Role.EDITOR)
    client = signed_in(bob)
    client.get(f"/s/{token}", follow=True)
    assert "Alice&#x27;s analysis" in client.get("/notebooks/shared/").content.decode()
    sharing.revoke_link(access_of(notebook.owner, notebook), link.pk)
    assert "Alice&#x27;s analysis" not in client.get("/notebooks/shared/").content.decode()


@pytest.mark.parametrize("mode", ["optional", "none"])
def test_an_unverified_address_gets_an_invitation_not_the_grant(notebook, settings, mode):
    settings.ACCOUNT_EMAIL_VERIFICATION = mode
    mallory = Client()
    mallory.post(
        "/accounts/signup/",
        {
            "display_name": "Mallory",
            "email": "victim@example.com",
            "password1": "a long passphrase 42",
            "password2": "a long passphrase 42",
        },
    )
    assert EmailAddress.objects.filter(email="victim@example.com", verified=False).exists()
    sharing.invite(access_of(notebook.owner, notebook), ["victim@example.com"], Role.EDITOR)
    assert not Grant.objects.filter(notebook=notebook).exists()
    assert Invitation.objects.filter(email="victim@example.com", accepted_at__isnull=True).exists()


def test_the_link_token_leaves_the_url_after_the_first_hop(notebook, bob):
    _, token = sharing.create_link(access_of(notebook.owner, notebook), label="s", role=Role.EDITOR)
    client = Client()
    first = client.get(f"/s/{token}")
    assert first["Location"] == "/accounts/login/?next=/s/"
    assert token not in str(dict(client.session.items()))  # only its hash waits there
    client.force_login(bob)
    opened = client.get("/s/")
    assert opened["Location"] == f"/n/{notebook.pk}/"
    assert token not in str(dict(client.session.items()))
    assert client.get(f"/n/{notebook.pk}/").status_code == 200


def test_the_link_token_stays_out_of_the_logs(notebook):
    from daphne.access import AccessLogGenerator

    from config import logformat

    logformat.redact_access_log()
    stream = io.StringIO()
    details = {
        "client": ["127.0.0.1", 1],
        "method": "GET",
        "path": "/s/SECRETtoken_abc",
        "status": 404,
        "size": 0,
    }
    AccessLogGenerator(stream)("http", "complete", details)
    assert "/s/<token>" in stream.getvalue()
    assert "SECRETtoken" not in stream.getvalue()
    handler = next(h for h in logging.getLogger().handlers if h.filters)
    out = io.StringIO()
    old = handler.setStream(out)
    try:
        assert Client().get("/s/SECRETtoken_abc").status_code == 404  # logged as "Not Found: ..."
    finally:
        handler.setStream(old)
    assert "Not Found: /s/<token>" in out.getvalue()
    assert "SECRETtoken" not in out.getvalue()


@pytest.mark.parametrize(
    "post",
    [
        {"action": "change_role", "grant_id": "999999", "role": "viewer"},
        {"action": "change_role", "grant_id": "abc", "role": "viewer"},
        {"action": "remove_grant", "grant_id": "1e3"},
        {"action": "remove_grant"},
        {"action": "revoke_link", "link_id": "999999"},
        {"action": "resend", "invitation_id": "x"},
        {"action": "withdraw", "invitation_id": "999999"},
        {"action": "transfer", "grant_id": "999999"},
        {"action": "invite", "emails": "a@example.com", "role": "superuser"},
        {"action": "create_link", "label": "m", "role": "viewer", "max_uses": "-1"},
        {"action": "create_link", "label": "m", "role": "viewer", "max_uses": "many"},
        {"action": "create_link", "label": "m", "role": "viewer", "expires": "1y"},
    ],
)
def test_bad_sharing_input_gets_a_message_not_a_500(notebook, alice, post):
    other_notebook = actions.create_blank(alice, title="Other")
    other, _ = sharing.create_link(access_of(alice, other_notebook), label="foreign", role=Role.VIEWER)
    if post.get("link_id") == "999999":
        post = {**post, "link_id": str(other.pk)}
    response = signed_in(alice).post(f"/n/{notebook.pk}/share", post)
    assert response.status_code in (302, 400, 404)
    assert messages_of(response) or response.status_code != 302
    assert not ShareLink.objects.filter(label="m").exists()
    other.refresh_from_db()
    assert other.revoked_at is None


def test_rename_does_not_redirect_off_site(notebook, alice):
    response = signed_in(alice).post(
        f"/n/{notebook.pk}/rename", {"title": "New", "next": "https://evil.example/phish"}
    )
    assert "evil.example" not in response["Location"]
    response = signed_in(alice).post(f"/n/{notebook.pk}/rename", {"title": "New", "next": "//evil.example/"})
    assert "evil.example" not in response["Location"]


def test_a_title_with_a_line_break_downloads(notebook, alice):
    notebook.title = "Résumé\r\nSet-Cookie: x=1"
    notebook.save()
    response = signed_in(alice).get(f"/n/{notebook.pk}/download")
    assert response.status_code == 200
    header = response["Content-Disposition"]
    assert "\r" not in header
    assert "\n" not in header
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9" in header
    assert re.search(r'filename="[ -~]+\.ipynb"', header)


def test_admin_login_takes_no_passwords(alice):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client = Client()
    response = client.post(
        "/admin/login/", {"username": "alice@example.com", "password": "correct horse battery"}
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session
    assert not mail.outbox
    client.force_login(alice)  # as after allauth's (throttled) login
    assert client.get("/admin/login/?next=/admin/")["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_admin_login_refuses_signed_in_people_who_are_not_staff(bob):
    assert signed_in(bob).get("/admin/login/").status_code == 403


def _sign_up(email: str) -> tuple[Client, object]:
    client = Client()
    form = {
        "display_name": "M",
        "email": email,
        "password1": "a long passphrase 42",
        "password2": "a long passphrase 42",
    }
    return client, client.post("/accounts/signup/", form)


@pytest.mark.parametrize("mode", ["mandatory", "optional", "none"])
def test_sign_up_does_not_tell_whether_an_address_is_registered(alice, settings, mode):
    settings.ACCOUNT_EMAIL_VERIFICATION = mode
    _, taken = _sign_up("alice@example.com")
    _, fresh = _sign_up("fresh@example.com")
    assert taken.status_code == fresh.status_code == 302
    assert taken["Location"] == fresh["Location"]
    assert User.objects.filter(email__iexact="alice@example.com").count() == 1
    assert [m.subject for m in mail.outbox if m.to == ["alice@example.com"]] == [
        "[testserver] Account Already Exists"
    ]


async def test_removing_a_person_closes_every_path(notebook, bob):
    from channels.db import database_sync_to_async as db

    from tests.support.consumer import close_all, joined

    owner = await db(access_of)(notebook.owner, notebook)
    grant = await db(Grant.objects.create)(notebook=notebook, user=bob, role=Role.EDITOR)
    _, token = await db(sharing.create_link)(owner, label="s", role=Role.EDITOR)
    client = await db(signed_in)(bob)
    await db(client.get)(f"/s/{token}")
    await db(Invitation.objects.create)(
        notebook=notebook,
        email="bob@example.com",
        role=Role.RUNNER,
        token_hash="b" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
    ws = await joined(notebook.pk, bob)
    await db(sharing.remove_grant)(owner, grant.pk)
    await ws.wait_closed()
    assert ws.closed["code"] == 4403
    assert (await db(client.get)(f"/n/{notebook.pk}/")).status_code == 403
    again = await db(client.get)(f"/s/{token}")
    assert again.status_code == 404
    assert "removed you" in again.content.decode()
    assert (await db(client.get)(f"/n/{notebook.pk}/")).status_code == 403
    assert not await db(Invitation.objects.filter(withdrawn_at__isnull=True).exists)()
    await db(sharing.invite)(owner, ["bob@example.com"], Role.VIEWER)  # shared again: welcome back
    assert (await db(client.get)(f"/n/{notebook.pk}/")).status_code == 200
    await close_all(ws)


def test_an_editor_cannot_change_grants_or_let_a_removed_person_back_by_inviting(
    notebook, sharing_editor, charlie
):
    runner = Grant.objects.create(
        notebook=notebook, user=charlie, role=Role.RUNNER, granted_by=notebook.owner
    )
    with pytest.raises(acl.Refused) as refused:
        sharing.invite(access_of(sharing_editor, notebook), ["charlie@example.com"], Role.VIEWER)
    assert refused.value.code == "owner_only"
    assert Grant.objects.get(pk=runner.pk).role == Role.RUNNER
    sharing.remove_grant(access_of(notebook.owner, notebook), runner.pk)
    with pytest.raises(acl.Refused) as refused:
        sharing.invite(access_of(sharing_editor, notebook), ["charlie@example.com"], Role.VIEWER)
    assert refused.value.code == "removed"
    assert not Grant.objects.filter(user=charlie).exists()
    assert not mail.outbox or all(m.to != ["charlie@example.com"] for m in mail.outbox)


def test_the_share_page_shows_what_a_cap_leaves(notebook, sharing_editor, charlie):
    sharing.invite(access_of(sharing_editor, notebook), ["charlie@example.com"], Role.EDITOR)
    sharing.create_link(access_of(sharing_editor, notebook), label="bobs", role=Role.EDITOR)
    grant = Grant.objects.get(user=sharing_editor)
    sharing.change_role(access_of(notebook.owner, notebook), grant.pk, Role.VIEWER)
    page = signed_in(notebook.owner).get(f"/n/{notebook.pk}/share").content.decode()
    assert "limited to “can view”" in page
    sharing.remove_grant(access_of(notebook.owner, notebook), grant.pk)
    page = signed_in(notebook.owner).get(f"/n/{notebook.pk}/share").content.decode()
    assert "no longer works" in page


def test_the_owner_removes_someone_who_came_through_a_link_without_revoking_it(notebook, bob, charlie):
    _, token = sharing.create_link(access_of(notebook.owner, notebook), label="class", role=Role.EDITOR)
    client = signed_in(bob)
    client.get(f"/s/{token}")
    page = signed_in(notebook.owner).get(f"/n/{notebook.pk}/share").content.decode()
    assert 'data-testid="remove-person"' in page
    owner = signed_in(notebook.owner)
    owner.post(f"/n/{notebook.pk}/share", {"action": "remove_person", "user_id": bob.pk})
    assert client.get(f"/n/{notebook.pk}/").status_code == 403
    assert client.get(f"/s/{token}").status_code == 404
    other = signed_in(charlie)
    other.get(f"/s/{token}")
    assert other.get(f"/n/{notebook.pk}/").status_code == 200  # the link still works for others
    assert AuditEvent.objects.filter(action="grant.removed", details__email="bob@example.com").exists()


def test_only_an_owner_removes_a_person(notebook, sharing_editor, charlie):
    _, token = sharing.create_link(access_of(notebook.owner, notebook), label="class", role=Role.EDITOR)
    signed_in(charlie).get(f"/s/{token}")
    with pytest.raises(acl.Refused) as refused:
        sharing.remove_person(access_of(sharing_editor, notebook), charlie.pk)
    assert refused.value.code == "owner_only"
    with pytest.raises(acl.Refused) as refused:
        sharing.remove_person(access_of(notebook.owner, notebook), 999999)
    assert refused.value.code == "not_found"


def test_an_editors_invitation_to_another_address_does_not_let_a_removed_person_back(
    notebook, alice, sharing_editor, charlie
):
    Grant.objects.create(notebook=notebook, user=charlie, role=Role.VIEWER, granted_by=alice)
    owner = signed_in(alice)
    owner.post(f"/n/{notebook.pk}/share", {"action": "remove_person", "user_id": charlie.pk})
    assert not Grant.objects.filter(notebook=notebook, user=charlie).exists()
    # Bob invites an address nobody has yet; Charlie adds it to his account and verifies it.
    signed_in(sharing_editor).post(
        f"/n/{notebook.pk}/share", {"action": "invite", "emails": "charlie.alt@example.com", "role": "viewer"}
    )
    EmailAddress.objects.create(user=charlie, email="charlie.alt@example.com", verified=True)
    assert sharing.bind_invitations(charlie) == 0
    assert not Grant.objects.filter(notebook=notebook, user=charlie).exists()
    # An owner's invitation to the same address does let him back.
    owner.post(
        f"/n/{notebook.pk}/share", {"action": "invite", "emails": "charlie.alt@example.com", "role": "viewer"}
    )
    sharing.bind_invitations(charlie)
    assert Grant.objects.filter(notebook=notebook, user=charlie).exists()


def test_a_huge_use_limit_is_refused_with_a_message(notebook, alice):
    response = signed_in(alice).post(
        f"/n/{notebook.pk}/share", {"action": "create_link", "role": "viewer", "max_uses": "9" * 30}
    )
    assert response.status_code == 302
    assert "at most 100,000 people" in messages_of(response)
    assert not ShareLink.objects.filter(notebook=notebook).exists()
