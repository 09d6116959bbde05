"""General access (restricted / anyone signed in with the link / anyone with the link, with a
role) and copying a live link again (tokens kept encrypted with a key derived from SECRET_KEY)."""

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


def shown_token(page: str) -> str:
    return re.search(r'data-testid="shown-link">[^<]*/s/([A-Za-z0-9_-]+)<', page).group(1)


def test_general_access_levels_let_in_whom_they_say(notebook, bob):
    owner = signed_in(notebook.owner)
    owner.post(f"/n/{notebook.pk}/share", {"action": "general_access", "level": "anyone", "role": "editor"})
    owner.post(
        f"/n/{notebook.pk}/share", {"action": "copy_link", "link_id": ShareLink.objects.get(general=True).pk}
    )
    token = shown_token(owner.get(f"/n/{notebook.pk}/share").content.decode())
    guest = Client()
    guest.get(f"/s/{token}")
    assert guest.get(f"/n/{notebook.pk}/").status_code == 200
    owner.post(
        f"/n/{notebook.pk}/share", {"action": "general_access", "level": "signed_in", "role": "viewer"}
    )
    assert guest.get(f"/n/{notebook.pk}/").status_code == 302  # guests need to sign in now
    bob_client = signed_in(bob)
    bob_client.get(f"/s/{token}")  # the same URL across changes
    assert acl.resolve(acl.Principal(user=bob), notebook).role is Role.VIEWER
    owner.post(
        f"/n/{notebook.pk}/share", {"action": "general_access", "level": "restricted", "role": "viewer"}
    )
    assert bob_client.get(f"/n/{notebook.pk}/").status_code == 403
    levels = list(
        AuditEvent.objects.filter(action="access.general_changed")
        .order_by("pk")
        .values_list("details__level", flat=True)
    )
    assert levels == ["anyone", "signed_in", "restricted"]


def test_general_access_is_capped_by_the_changers_role(notebook, bob):
    notebook.editors_can_share = True
    notebook.save()
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR, granted_by=notebook.owner)
    with pytest.raises(acl.Refused) as refused:
        sharing.set_general_access(access_of(bob, notebook), "anyone", Role.RUNNER)
    assert refused.value.code is acl.Rule.ABOVE_OWN_ROLE
    sharing.set_general_access(access_of(notebook.owner, notebook), "anyone", Role.RUNNER)
    with pytest.raises(acl.Refused) as refused:  # set higher by an owner: an editor cannot change it
        sharing.set_general_access(access_of(bob, notebook), "restricted", None)
    assert refused.value.code is acl.Rule.OWNER_ONLY
    with pytest.raises(acl.Refused) as refused:
        sharing.set_general_access(access_of(notebook.owner, notebook), "anyone", Role.OWNER)
    assert refused.value.code is acl.Rule.LINK_OWNER_ROLE


@pytest.mark.parametrize("level", ["", "public", "x" * 5000])
def test_a_bad_level_gets_a_message(notebook, level):
    response = signed_in(notebook.owner).post(
        f"/n/{notebook.pk}/share", {"action": "general_access", "level": level, "role": "viewer"}, follow=True
    )
    assert response.status_code == 200
    assert "is not a general access choice" in response.content.decode()
    assert not ShareLink.objects.filter(general=True).exists()


def test_a_link_is_copied_again_and_stored_encrypted(notebook):
    link, token = sharing.create_link(access_of(notebook.owner, notebook), label="class", role=Role.EDITOR)
    assert token not in link.token_encrypted
    assert crypto.decrypt(link.token_encrypted, "share-link") == token
    with pytest.raises(crypto.TokenUnreadable):  # the kernel servers' key does not read it
        crypto.decrypt(link.token_encrypted)
    assert sharing.copy_link(access_of(notebook.owner, notebook), link.pk) == token
    assert AuditEvent.objects.filter(action="link.copied").count() == 1


def test_an_old_link_cannot_be_copied_and_is_replaced(notebook, bob):
    link, token = sharing.create_link(access_of(notebook.owner, notebook), label="old", role=Role.EDITOR)
    ShareLink.objects.filter(pk=link.pk).update(token_encrypted="")
    owner = signed_in(notebook.owner)
    page = owner.get(f"/n/{notebook.pk}/share").content.decode()
    assert "made before links could be copied" in page
    with pytest.raises(acl.Refused) as refused:
        sharing.copy_link(access_of(notebook.owner, notebook), link.pk)
    assert refused.value.code is acl.Rule.NOT_COPYABLE
    owner.post(f"/n/{notebook.pk}/share", {"action": "replace_link", "link_id": link.pk})
    new_token = shown_token(owner.get(f"/n/{notebook.pk}/share").content.decode())
    assert ShareLink.objects.get(pk=link.pk).revoked_at is not None
    assert signed_in(bob).get(f"/s/{token}").status_code == 404
    assert signed_in(bob).get(f"/s/{new_token}").status_code == 302


def test_a_sharer_does_not_copy_a_link_above_their_role(notebook, bob):
    notebook.editors_can_share = True
    notebook.save()
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR, granted_by=notebook.owner)
    link, _ = sharing.create_link(access_of(notebook.owner, notebook), label="run", role=Role.RUNNER)
    with pytest.raises(acl.Refused):
        sharing.copy_link(access_of(bob, notebook), link.pk)
    mine, token = sharing.create_link(access_of(bob, notebook), label="mine", role=Role.VIEWER)
    assert sharing.copy_link(access_of(bob, notebook), mine.pk) == token
