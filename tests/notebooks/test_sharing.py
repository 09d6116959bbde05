"""Share links, invitations and role changes, on pages and on live sockets."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core import mail
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from notebooks import invitations, sharing
from notebooks.access import Action, access_notebook, principal_from_session
from notebooks.models import Grant, Role, ShareLink
from tests.support.consumer import close_all, connect
from tests.support.waiting import eventually_async
from tests.support.yclient import CommunicatorClient

pytestmark = pytest.mark.django_db(transaction=True)


def owner_access(notebook):
    return access_notebook(principal_from_session(notebook.owner, None), notebook.pk, Action.OWN)


def make_link(notebook, role=Role.EDITOR, **kwargs):
    return sharing.create_link(owner_access(notebook), label="Seminar", role=role, **kwargs)


def guest_via(token: str) -> Client:
    client = Client()
    response = client.get(f"/s/{token}")
    assert response.status_code == 302, response.content
    return client


async def socket_for(client: Client, notebook, query: str = "") -> CommunicatorClient:
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    ws, connected = await connect(notebook.pk, cookie, query)
    assert connected
    await ws.start()
    await ws.pump()
    return ws


def test_a_link_token_is_long_random_and_stored_hashed(notebook):
    link, token = make_link(notebook)
    assert len(token) >= 32
    assert token not in link.token_hash
    assert ShareLink.objects.filter(token_hash__contains=token).count() == 0


async def test_an_anonymous_guest_joins_through_a_link_and_shows_as_guest(notebook, alice):
    link, token = await database_sync_to_async(make_link)(notebook, require_login=False)
    guest = await database_sync_to_async(guest_via)(token)
    page = await database_sync_to_async(guest.get)(f"/n/{notebook.pk}/")
    assert page.status_code == 200
    ws = await socket_for(guest, notebook)
    assert ws.synced.is_set()
    await ws.set_awareness({"user": {"name": "Alice Smith"}})
    await ws.pump()
    assert ws.awareness[ws.doc.client_id]["user"]["name"] == "Guest via Seminar"
    ws.text().insert(0, "guest edit")
    await ws.flush()
    await ws.pump()
    assert ws.denied == []
    event = await database_sync_to_async(AuditEvent.objects.filter(action="link.used").get)()
    assert event.link_id == link.pk
    await close_all(ws)


async def test_revoking_a_link_closes_the_guest_socket_and_the_page(notebook):
    link, token = await database_sync_to_async(make_link)(notebook, require_login=False)
    guest = await database_sync_to_async(guest_via)(token)
    ws = await socket_for(guest, notebook)
    await database_sync_to_async(sharing.revoke_link)(
        await database_sync_to_async(owner_access)(notebook), link.pk
    )
    await ws.wait_closed()
    assert ws.closed["code"] == 4401
    assert ws.denied == ["The link you used is no longer valid."]
    page = await database_sync_to_async(guest.get)(f"/n/{notebook.pk}/")
    assert page.status_code == 302  # back to log in: the guest has nothing left
    again = await database_sync_to_async(Client().get)(f"/s/{token}")
    assert again.status_code == 404
    assert "revoked or has expired" in again.content.decode()


async def test_a_guest_who_opened_two_links_keeps_the_other_ones_role_when_one_is_revoked(notebook):
    """A socket's access is the best of every valid link its person opened: revoking the editor
    link leaves them the viewer link's role on the open socket, revoking that one too closes it."""
    editor_link, editor_token = await database_sync_to_async(make_link)(notebook, require_login=False)
    viewer_link, viewer_token = await database_sync_to_async(make_link)(
        notebook, role=Role.VIEWER, require_login=False
    )
    guest = await database_sync_to_async(guest_via)(editor_token)
    response = await database_sync_to_async(guest.get)(f"/s/{viewer_token}")
    assert response.status_code == 302
    ws = await socket_for(guest, notebook, query="ext=1")  # told its role
    assert ws.session["role"] == "editor"
    owner = await database_sync_to_async(owner_access)(notebook)
    await database_sync_to_async(sharing.revoke_link)(owner, editor_link.pk)
    await ws.pump_until(lambda: ws.session["role"] == "viewer", what="the viewer link's role")
    assert ws.session["canEdit"] is False
    assert ws.closed is None
    await database_sync_to_async(sharing.revoke_link)(owner, viewer_link.pk)
    await ws.wait_closed()
    assert ws.closed["code"] == 4401


def test_an_expired_link_is_refused(notebook):
    _, token = make_link(notebook, require_login=False, expires_at=timezone.now() - timedelta(seconds=1))
    response = Client().get(f"/s/{token}")
    assert response.status_code == 404
    assert AuditEvent.objects.filter(action="access.denied").exists()


def test_a_link_reaches_only_its_own_notebook(notebook, alice):
    from notebooks import actions

    other = actions.create_blank(alice, title="Private")
    _, token = make_link(notebook, require_login=False)
    guest = guest_via(token)
    assert guest.get(f"/n/{notebook.pk}/").status_code == 200
    assert guest.get(f"/n/{other.pk}/").status_code == 302


def test_a_sign_in_link_sends_anonymous_visitors_to_log_in(notebook, bob):
    _, token = make_link(notebook)
    client = Client()
    response = client.get(f"/s/{token}")
    assert response["Location"] == "/accounts/login/?next=/s/"  # the token waits in the session
    client.force_login(bob)
    assert client.get("/s/").status_code == 302
    assert client.get(f"/n/{notebook.pk}/").status_code == 200
    assert "Alice&#x27;s analysis" in client.get("/notebooks/shared/").content.decode()


def test_a_use_limit_stops_new_people_but_not_those_who_joined(notebook):
    _, token = make_link(notebook, require_login=False, max_uses=1)
    first = guest_via(token)
    assert first.get(f"/s/{token}").status_code == 302
    assert Client().get(f"/s/{token}").status_code == 404


def test_wrong_tokens_are_rate_limited(notebook):
    client = Client()
    for _ in range(sharing.LINK_GUESSES_PER_IP):
        client.get("/s/wrong-token")
    _, token = make_link(notebook, require_login=False)
    response = client.get(f"/s/{token}")
    assert "Too many invalid links" in response.content.decode()


def test_opening_a_real_link_is_not_a_guess(notebook):
    """Every open takes a guess before the lookup (many at once cannot all slip under the
    limit); one that finds its link gives it back, so a class behind one address keeps joining."""
    _, token = make_link(notebook, require_login=False)
    for _ in range(sharing.LINK_GUESSES_PER_IP * 2):
        assert Client().get(f"/s/{token}").status_code == 302
    client = Client()
    for _ in range(sharing.LINK_GUESSES_PER_IP - 1):
        client.get("/s/wrong-token")
    assert client.get(f"/s/{token}").status_code == 302  # 19 wrong ones: still room
    client.get("/s/wrong-token")
    assert "Too many invalid links" in client.get(f"/s/{token}").content.decode()


async def test_a_viewer_link_guest_cannot_change_the_document(notebook):
    _, token = await database_sync_to_async(make_link)(notebook, role=Role.VIEWER, require_login=False)
    guest = await database_sync_to_async(guest_via)(token)
    ws = await socket_for(guest, notebook)
    ws.text().insert(0, "nope")
    await ws.flush()
    await ws.pump()
    assert ws.denied
    await close_all(ws)


def test_inviting_an_existing_user_grants_at_once_and_emails_them(notebook, bob):
    sharing.invite(owner_access(notebook), ["bob@example.com"], Role.EDITOR)
    assert Grant.objects.get(notebook=notebook, user=bob).role == Role.EDITOR
    assert mail.outbox[0].to == ["bob@example.com"]


def test_an_invitation_binds_when_the_address_signs_up_and_verifies(notebook, settings):
    sharing.invite(owner_access(notebook), ["New.Person@Example.com", "second@example.com"], Role.RUNNER)
    assert {m.to[0] for m in mail.outbox} == {"new.person@example.com", "second@example.com"}
    client = Client()
    client.post(
        "/accounts/signup/",
        {
            "display_name": "New Person",
            "email": "new.person@example.com",
            "password1": "a long passphrase 42",
            "password2": "a long passphrase 42",
        },
    )
    link = re.search(r"http://\S+/accounts/confirm-email/\S+/", mail.outbox[-1].body).group(0)
    client.get(link.replace("http://testserver", ""))
    grant = Grant.objects.get(notebook=notebook, user__email="new.person@example.com")
    assert grant.role == Role.RUNNER
    assert grant.via == Grant.Via.INVITATION
    assert client.get(f"/n/{notebook.pk}/").status_code == 200


def test_only_the_owner_reaches_the_sharing_page(notebook, bob, charlie):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR)
    for user, status in ((notebook.owner, 200), (bob, 403), (charlie, 403)):
        client = Client()
        client.force_login(user)
        assert client.get(f"/n/{notebook.pk}/share").status_code == status


def test_the_sharing_page_creates_and_revokes_links(notebook):
    client = Client()
    client.force_login(notebook.owner)
    client.post(f"/n/{notebook.pk}/share", {"action": "create_link", "label": "Class", "role": "viewer"})
    page = client.get(f"/n/{notebook.pk}/share").content.decode()
    token = re.search(r"/s/([\w-]+)</code>", page).group(1)
    assert Client().get(f"/s/{token}").status_code == 302
    link = ShareLink.objects.get()
    client.post(f"/n/{notebook.pk}/share", {"action": "revoke_link", "link_id": link.pk})
    link.refresh_from_db()
    assert link.revoked_at is not None


async def test_expiry_closes_a_live_guest_socket_and_is_audited(notebook):
    link, token = await database_sync_to_async(make_link)(
        notebook, require_login=False, expires_at=timezone.now() + timedelta(seconds=1)
    )
    guest = await database_sync_to_async(guest_via)(token)
    ws = await socket_for(guest, notebook)
    closed = await ws.wait_closed(timeout=15)  # at the expiry, within a tick
    assert closed["code"] == 4401

    # Recorded once the socket is closed (a room closes all its guests' sockets first).
    def expired() -> list:
        return list(AuditEvent.objects.filter(action="link.expired").values_list("link_id", flat=True))

    noted = await eventually_async(database_sync_to_async(expired), what="link.expired recorded")
    assert noted == [link.pk]


def test_the_owner_hands_the_notebook_over_and_keeps_edit_and_run(notebook, alice, bob):
    grant = Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR)
    client = Client()
    client.force_login(alice)
    client.post(f"/n/{notebook.pk}/share", {"action": "transfer", "grant_id": grant.pk})
    notebook.refresh_from_db()
    assert notebook.owner == bob
    former = Grant.objects.get(notebook=notebook, user=alice)
    assert former.role == Role.RUNNER
    assert former.via == Grant.Via.TRANSFER
    assert not Grant.objects.filter(notebook=notebook, user=bob).exists()
    assert client.get(f"/n/{notebook.pk}/share").status_code == 403
    assert AuditEvent.objects.filter(action="notebook.transferred", actor=alice).exists()


def test_an_invitee_leaves_and_loses_access(notebook, bob):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR)
    client = Client()
    client.force_login(bob)
    client.post(f"/n/{notebook.pk}/leave")
    assert not Grant.objects.filter(notebook=notebook, user=bob).exists()
    assert client.get(f"/n/{notebook.pk}/").status_code == 403
    owner = Client()
    owner.force_login(notebook.owner)
    owner.post(f"/n/{notebook.pk}/leave")
    assert owner.get(f"/n/{notebook.pk}/").status_code == 200


def test_editors_may_reshare_only_when_the_owner_allows(notebook, bob):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR)
    client = Client()
    client.force_login(bob)
    assert client.get(f"/n/{notebook.pk}/share").status_code == 403
    owner = Client()
    owner.force_login(notebook.owner)
    owner.post(f"/n/{notebook.pk}/share", {"action": "settings", "editors_can_share": "on"})
    assert client.get(f"/n/{notebook.pk}/share").status_code == 200
    client.post(f"/n/{notebook.pk}/share", {"action": "transfer", "grant_id": 1})
    notebook.refresh_from_db()
    assert notebook.owner != bob


def test_a_bad_address_invites_nobody(notebook):
    with pytest.raises(sharing.ShareError, match="Not an email address: not-an-email"):
        sharing.invite(owner_access(notebook), ["ok@example.com", "not-an-email"], Role.VIEWER)
    assert not mail.outbox


def test_invitation_sending_is_rate_limited(notebook, monkeypatch):
    monkeypatch.setattr(invitations, "INVITATIONS_PER_HOUR", 3)
    sharing.invite(owner_access(notebook), ["a@example.com", "b@example.com"], Role.VIEWER)
    with pytest.raises(sharing.ShareError, match="at most 3 invitations an hour"):
        sharing.invite(owner_access(notebook), ["c@example.com", "d@example.com"], Role.VIEWER)


def test_the_sharing_page_can_be_framed_by_the_editor_only(notebook):
    client = Client()
    client.force_login(notebook.owner)
    response = client.get(f"/n/{notebook.pk}/share?embed=1")
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert 'class="embed"' in response.content.decode()
    assert client.get(f"/n/{notebook.pk}/")["X-Frame-Options"] == "DENY"


def test_a_class_opening_a_link_at_the_same_moment_is_not_refused(notebook):
    """Thirty people behind one address open the link at once: for a moment every one of them
    holds a guess (taken before the lookup, given back after it), the count is at the limit, and
    the next one waits for those lookups instead of being told of invalid links."""
    import threading

    from config.cache import give_back, take

    _, token = make_link(notebook, require_login=False)
    key = "link-guess:127.0.0.1"
    for _ in range(sharing.LINK_GUESSES_PER_IP):  # twenty classmates' lookups under way
        assert take(key, 1, sharing.LINK_GUESSES_PER_IP, 600)
    done = threading.Timer(0.2, lambda: [give_back(key) for _ in range(sharing.LINK_GUESSES_PER_IP)])
    done.start()
    try:
        assert Client().get(f"/s/{token}").status_code == 302
    finally:
        done.join()


def test_an_access_does_not_hold_the_notebooks_document(notebook, bob):
    """Every join and every re-check of every socket reads the notebook through its access, and
    each socket keeps its Access while it is open: with the snapshot read along, a lecture of 500
    sockets on a 4 MB notebook read 4 MB per check and kept 2 GB. Only the update log reads it."""
    from notebooks.models import Notebook

    Notebook.objects.filter(pk=notebook.pk).update(snapshot=b"\x00" * (1 << 20))
    Grant.objects.create(notebook=notebook, user=bob, role=Role.VIEWER)
    for principal in (principal_from_session(notebook.owner, None), principal_from_session(bob, None)):
        access = access_notebook(principal, notebook.pk)
        assert "snapshot" in access.notebook.get_deferred_fields()
        assert access.notebook.title == notebook.title
