"""Sharing under hostile input and role games: general access, copying links, removing people."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from audit.models import AuditEvent
from notebooks import access as acl
from notebooks import crypto, sharing
from notebooks.models import Grant, Role, ShareLink

pytestmark = pytest.mark.django_db(transaction=True)


def access_of(user, notebook):
    return acl.access_notebook(acl.Principal(user=user), notebook.pk)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


HOSTILE_IDS = ["", "abc", "1.5", "-1", "99999999999999999999999", "9" * 400, "1e3", "\u0661", "0x1"]
ID_FIELDS = [
    ("copy_link", "link_id"),
    ("replace_link", "link_id"),
    ("revoke_link", "link_id"),
    ("remove_person", "user_id"),
    ("remove_guest", "join_id"),
    ("remove_grant", "grant_id"),
    ("change_role", "grant_id"),
    ("transfer", "grant_id"),
    ("resend", "invitation_id"),
    ("withdraw", "invitation_id"),
]


@pytest.mark.parametrize(("action", "field"), ID_FIELDS)
def test_hostile_ids_get_a_message_never_a_500(notebook, action, field):
    owner = signed_in(notebook.owner)
    for value in HOSTILE_IDS:
        response = owner.post(
            f"/n/{notebook.pk}/share", {"action": action, field: value, "role": "viewer"}, follow=True
        )
        assert response.status_code == 200, (action, value)
    response = owner.post(f"/n/{notebook.pk}/share", {"action": action, "role": "viewer"}, follow=True)
    assert response.status_code == 200


def test_general_access_made_dead_by_its_changer_leaving_reads_restricted(notebook, bob, charlie):
    """An editor who may share re-saves general access, then is removed: the general link dies
    with them (it is capped by its maker), and the share page must not claim it still works."""
    notebook.editors_can_share = True
    notebook.save()
    grant = Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR, granted_by=notebook.owner)
    sharing.set_general_access(access_of(notebook.owner, notebook), "signed_in", Role.VIEWER)
    sharing.set_general_access(access_of(bob, notebook), "signed_in", Role.VIEWER)
    sharing.remove_grant(access_of(notebook.owner, notebook), grant.pk)
    assert acl.link_role(notebook, ShareLink.objects.get(general=True)) is None  # it lets nobody in
    assert sharing.general_access(notebook) == ("restricted", None)
    page = signed_in(notebook.owner).get(f"/n/{notebook.pk}/share").content.decode()
    assert 'value="restricted" selected' in page
    sharing.set_general_access(access_of(notebook.owner, notebook), "signed_in", Role.VIEWER)  # reopened
    level, link = sharing.general_access(notebook)
    assert level == "signed_in"
    assert acl.link_role(notebook, link) is Role.VIEWER


def test_a_leaked_general_link_is_renewed(notebook, bob):
    """Restricting and reopening general access brings its old URL back: renewing it is the
    way to a URL the leak does not know; whoever joined through the old one is out."""
    owner = signed_in(notebook.owner)
    url = f"/n/{notebook.pk}/share"
    owner.post(url, {"action": "general_access", "level": "anyone", "role": "editor"})
    general = ShareLink.objects.get(general=True)
    owner.post(url, {"action": "copy_link", "link_id": general.pk})
    old = shown_token(owner.get(url).content.decode())
    guest = Client()
    guest.get(f"/s/{old}")
    assert guest.get(f"/n/{notebook.pk}/").status_code == 200
    owner.post(url, {"action": "renew_general_link"})
    new = shown_token(owner.get(url).content.decode())
    assert new != old
    assert guest.get(f"/n/{notebook.pk}/").status_code == 302  # out: sign in or a link
    assert Client().get(f"/s/{old}").status_code == 404
    assert sharing.general_access(notebook)[0] == "anyone"
    newcomer = Client()
    assert newcomer.get(f"/s/{new}").status_code == 302
    assert newcomer.get(f"/n/{notebook.pk}/").status_code == 200
    assert AuditEvent.objects.filter(action="link.renewed").count() == 1
    owner.post(url, {"action": "general_access", "level": "restricted", "role": "viewer"})
    response = owner.post(url, {"action": "renew_general_link"}, follow=True)
    assert "no link to renew" in response.content.decode()


def shown_token(page: str) -> str:
    return re.search(r'data-testid="shown-link">[^<]*/s/([A-Za-z0-9_-]+)<', page).group(1)


def test_a_rotated_secret_key_still_reads_tokens_through_its_fallbacks(settings):
    """Django rotates SECRET_KEY by moving the old one to SECRET_KEY_FALLBACKS: stored tokens
    (share links, kernel servers) stay readable then, and are unreadable without it."""
    settings.SECRET_KEY = "old-" + "k" * 50
    stored = crypto.encrypt("a token", "share-link")
    server = crypto.encrypt("a server token")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-" + "n" * 50, ["old-" + "k" * 50]
    assert crypto.decrypt(stored, "share-link") == "a token"
    assert crypto.decrypt(server) == "a server token"
    assert crypto.decrypt(crypto.encrypt("fresh", "share-link"), "share-link") == "fresh"
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(crypto.TokenUnreadable):
        crypto.decrypt(stored, "share-link")


def test_an_unreadable_stored_token_says_so_and_the_general_link_is_renewed(notebook):
    """A tampered row (or a dropped key) is a clean refusal naming the way out, for a named link
    (replace it) and for the general link (give it a new link), never a 500."""
    owner = signed_in(notebook.owner)
    url = f"/n/{notebook.pk}/share"
    link, _ = sharing.create_link(access_of(notebook.owner, notebook), label="named", role=Role.VIEWER)
    sharing.set_general_access(access_of(notebook.owner, notebook), "anyone", Role.VIEWER)
    general = ShareLink.objects.get(general=True)
    ShareLink.objects.filter(pk__in=[link.pk, general.pk]).update(token_encrypted="gAAAAA-tampered")
    page = owner.post(url, {"action": "copy_link", "link_id": link.pk}, follow=True).content.decode()
    assert "cannot be read" in page
    assert "Replace" in page
    page = owner.post(url, {"action": "copy_link", "link_id": general.pk}, follow=True).content.decode()
    assert "cannot be read" in page
    assert "New link" in page
    owner.post(url, {"action": "renew_general_link"})
    assert shown_token(owner.get(url).content.decode())


def test_concurrent_first_general_access_changes_make_one_link(notebook):
    """Two saves of general access at once (a double click, two owners) when there is no general
    link yet: one link, no integrity error."""
    import threading

    from django.db import connection

    barrier, errors = threading.Barrier(6), []

    def save(level):
        try:
            barrier.wait()
            sharing.set_general_access(access_of(notebook.owner, notebook), level, Role.VIEWER)
        except Exception as exc:  # the failure is what the test reports
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(lvl,)) for lvl in ["anyone", "signed_in"] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ShareLink.objects.filter(general=True).count() == 1


@pytest.mark.parametrize("action", ["general_access", "copy_link", "renew_general_link", "remove_guest"])
def test_a_share_form_without_its_csrf_token_changes_nothing(notebook, action):
    sharing.set_general_access(access_of(notebook.owner, notebook), "anyone", Role.VIEWER)
    general = ShareLink.objects.get(general=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(notebook.owner)
    post = {"action": action, "level": "restricted", "link_id": general.pk, "join_id": "1"}
    response = client.post(f"/n/{notebook.pk}/share", post)
    assert response.status_code == 403
    assert ShareLink.objects.get(general=True).token_hash == general.token_hash
    assert sharing.general_access(notebook)[0] == "anyone"
    assert not AuditEvent.objects.filter(action__in=["link.copied", "link.renewed"]).exists()


def test_reopening_general_access_keeps_a_removed_person_out(notebook, bob):
    owner = signed_in(notebook.owner)
    url = f"/n/{notebook.pk}/share"
    owner.post(url, {"action": "general_access", "level": "signed_in", "role": "editor"})
    owner.post(url, {"action": "copy_link", "link_id": ShareLink.objects.get(general=True).pk})
    token = shown_token(owner.get(url).content.decode())
    bob_client = signed_in(bob)
    bob_client.get(f"/s/{token}")
    assert bob_client.get(f"/n/{notebook.pk}/").status_code == 200
    owner.post(url, {"action": "remove_person", "user_id": bob.pk})
    owner.post(url, {"action": "general_access", "level": "restricted", "role": "viewer"})
    owner.post(url, {"action": "general_access", "level": "anyone", "role": "editor"})
    assert bob_client.get(f"/s/{token}").status_code == 404
    assert bob_client.get(f"/n/{notebook.pk}/").status_code == 403


def test_whoever_last_set_general_access_may_renew_it(notebook, bob, charlie):
    notebook.editors_can_share = True
    notebook.save()
    for user in (bob, charlie):
        Grant.objects.create(notebook=notebook, user=user, role=Role.EDITOR, granted_by=notebook.owner)
    sharing.set_general_access(access_of(bob, notebook), "anyone", Role.VIEWER)
    with pytest.raises(acl.Refused) as refused:
        sharing.renew_general_link(access_of(charlie, notebook))
    assert refused.value.code is acl.Rule.OWNER_ONLY
    link, token = sharing.renew_general_link(access_of(bob, notebook))
    assert sharing.copy_link(access_of(bob, notebook), link.pk) == token
