"""The share page's "People with access": everyone who can open the notebook, every path they
have, their effective role, whether they are connected now; and removal by every path,
guests included."""

from __future__ import annotations

import pytest
from django.test import Client

from notebooks import access as acl
from notebooks import live, sharing
from notebooks.models import Grant, LinkJoin, Removal, Role
from notebooks.people import people_with_access

pytestmark = pytest.mark.django_db(transaction=True)


def owner_access(notebook):
    return acl.access_notebook(acl.Principal(user=notebook.owner), notebook.pk, acl.Action.SHARE)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def by_key(notebook) -> dict:
    return {p.key: p for p in people_with_access(notebook)}


def test_the_list_shows_every_path_and_the_highest_role(notebook, bob, charlie):
    """Bob can view by grant and edit-and-run by a link: he is listed once, as a runner, with
    both paths; a guest and a pending invitation are listed too."""
    Grant.objects.create(notebook=notebook, user=bob, role=Role.VIEWER, granted_by=notebook.owner)
    _, token = sharing.create_link(owner_access(notebook), label="lab", role=Role.RUNNER, require_login=False)
    signed_in(bob).get(f"/s/{token}")
    Client().get(f"/s/{token}")  # a guest
    sharing.invite(owner_access(notebook), ["newcomer@example.com"], Role.EDITOR)
    people = by_key(notebook)
    bob_row = people[f"u:{bob.pk}"]
    assert bob_row.role is Role.RUNNER
    assert sorted(p.kind for p in bob_row.paths) == ["grant", "link"]
    guests = [p for p in people.values() if p.key.startswith("g:")]
    assert [(g.role, g.name) for g in guests] == [(Role.RUNNER, "Guest via lab")]
    invited = [p for p in people.values() if p.is_invitation]
    assert [(i.email, i.role) for i in invited] == [("newcomer@example.com", Role.EDITOR)]
    assert people[f"u:{notebook.owner.pk}"].role is Role.OWNER
    assert f"u:{charlie.pk}" not in people


def test_a_revoked_link_takes_its_people_off_the_list(notebook, bob):
    link, token = sharing.create_link(owner_access(notebook), label="lab", role=Role.EDITOR)
    signed_in(bob).get(f"/s/{token}")
    assert f"u:{bob.pk}" in by_key(notebook)
    sharing.revoke_link(owner_access(notebook), link.pk)
    assert f"u:{bob.pk}" not in by_key(notebook)


def test_the_list_marks_who_is_connected_now(notebook, bob, monkeypatch):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR, granted_by=notebook.owner)
    monkeypatch.setattr(live, "_SOURCES", [lambda nb: {f"u:{bob.pk}"} if nb == str(notebook.pk) else set()])
    people = by_key(notebook)
    assert people[f"u:{bob.pk}"].live
    assert not people[f"u:{notebook.owner.pk}"].live
    page = signed_in(notebook.owner).get(f"/n/{notebook.pk}/share").content.decode()
    assert page.count('data-live="1"') == 1


def test_removing_a_guest_blocks_their_session_but_not_the_link(notebook):
    _, token = sharing.create_link(
        owner_access(notebook), label="open", role=Role.EDITOR, require_login=False
    )
    guest, other = Client(), Client()
    guest.get(f"/s/{token}")
    assert guest.get(f"/n/{notebook.pk}/").status_code == 200
    join = LinkJoin.objects.get(user__isnull=True)
    response = signed_in(notebook.owner).post(
        f"/n/{notebook.pk}/share", {"action": "remove_guest", "join_id": join.pk}
    )
    assert response.status_code == 302
    assert Removal.objects.filter(notebook=notebook, guest_key=join.guest_key).exists()
    assert guest.get(f"/n/{notebook.pk}/").status_code in (302, 403)
    refused = guest.get(f"/s/{token}")
    assert refused.status_code == 404
    assert "removed you" in refused.content.decode()
    other.get(f"/s/{token}")
    assert other.get(f"/n/{notebook.pk}/").status_code == 200  # the link still works for others


@pytest.mark.parametrize("who", ["editor", "guest", "stranger"])
def test_only_an_owner_removes_a_guest(notebook, bob, charlie, who):
    notebook.editors_can_share = True
    notebook.save()
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR, granted_by=notebook.owner)
    _, token = sharing.create_link(
        owner_access(notebook), label="open", role=Role.EDITOR, require_login=False
    )
    Client().get(f"/s/{token}")
    join = LinkJoin.objects.get(user__isnull=True)
    if who == "guest":
        client = Client()
        client.get(f"/s/{token}")
    else:
        client = signed_in(bob if who == "editor" else charlie)
    client.post(f"/n/{notebook.pk}/share", {"action": "remove_guest", "join_id": join.pk})
    assert LinkJoin.objects.filter(pk=join.pk).exists()
    assert not Removal.objects.exists()


def test_a_bad_guest_id_gets_a_message(notebook):
    owner = signed_in(notebook.owner)
    for bad in ("x", "999999", ""):
        response = owner.post(f"/n/{notebook.pk}/share", {"action": "remove_guest", "join_id": bad})
        assert response.status_code == 302
