"""Each action done through the real code paths leaves one event with the right actor."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from audit.models import AuditEvent
from notebooks import sharing
from notebooks.access import Action, access_notebook, principal_from_session
from notebooks.models import Grant, Invitation, Notebook, Role
from tests.support.cast import cookie_for, make_user
from tests.support.consumer import close_all, connect, joined

pytestmark = pytest.mark.django_db(transaction=True)

IPYNB = json.dumps(
    {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "a",
                "metadata": {},
                "source": "1",
                "outputs": [],
                "execution_count": None,
            }
        ],
    }
).encode()


def owner_access(notebook):
    return access_notebook(principal_from_session(notebook.owner, None), notebook.pk, Action.OWN)


def last(action: str, **filters) -> AuditEvent:
    return AuditEvent.objects.filter(action=action, **filters).latest("id")


def client_for(user) -> Client:
    client = Client(REMOTE_ADDR="203.0.113.7", HTTP_USER_AGENT="pytest-browser/1.0")
    client.force_login(user)
    return client


def test_notebook_actions_through_the_pages(alice):
    client = client_for(alice)
    client.post("/notebooks/upload", {"files": SimpleUploadedFile("Results.ipynb", IPYNB)})
    notebook = Notebook.objects.get(title="Results")
    imported = last("notebook.imported")
    assert (imported.actor, imported.notebook_id, imported.details["filename"]) == (
        alice,
        notebook.pk,
        "Results.ipynb",
    )
    assert (imported.ip, imported.user_agent) == ("203.0.113.7", "pytest-browser/1.0")

    client.post("/notebooks/new")
    assert last("notebook.created").actor == alice

    client.post(f"/n/{notebook.pk}/rename", {"title": "Final results"})
    renamed = last("notebook.renamed")
    assert (renamed.actor, renamed.details) == (alice, {"old": "Results", "new": "Final results"})

    assert client.get(f"/n/{notebook.pk}/download").status_code == 200
    assert last("notebook.downloaded").actor == alice

    client.post(f"/n/{notebook.pk}/replace", {"file": SimpleUploadedFile("v2.ipynb", IPYNB)})
    assert last("notebook.replaced").details["filename"] == "v2.ipynb"

    client.post(f"/n/{notebook.pk}/delete")
    client.post(f"/n/{notebook.pk}/restore")
    client.post(f"/n/{notebook.pk}/delete")
    client.post(f"/n/{notebook.pk}/purge")
    for action in ("notebook.deleted", "notebook.restored", "notebook.purged"):
        event = last(action, notebook_id=notebook.pk)
        assert event.actor == alice
        assert event.notebook_title == "Final results"
    # events outlive the notebook they are about
    assert AuditEvent.objects.filter(notebook_id=notebook.pk).count() == 8


def test_sharing_through_the_share_page(notebook, alice, bob):
    client = client_for(alice)
    share = f"/n/{notebook.pk}/share"
    client.post(share, {"action": "invite", "emails": "bob@example.com, new@example.com", "role": "editor"})
    added = last("grant.added")
    assert (added.actor, added.details["email"], added.details["role"]) == (
        alice,
        "bob@example.com",
        "editor",
    )
    sent = last("invitation.sent")
    assert (sent.actor, sent.details["email"]) == (alice, "new@example.com")

    grant = Grant.objects.get(notebook=notebook, user=bob)
    client.post(share, {"action": "change_role", "grant_id": grant.pk, "role": "runner"})
    changed = last("grant.changed")
    assert (changed.actor, changed.details["old"], changed.details["new"]) == (alice, "editor", "runner")
    client.post(share, {"action": "remove_grant", "grant_id": grant.pk})
    assert last("grant.removed").details["email"] == "bob@example.com"

    invitation = Invitation.objects.get(email="new@example.com")
    client.post(share, {"action": "withdraw", "invitation_id": invitation.pk})
    assert last("invitation.withdrawn").actor == alice

    client.post(share, {"action": "create_link", "label": "Class", "role": "viewer", "require_login": "on"})
    created = last("link.created")
    assert (created.actor, created.details["link_label"]) == (alice, "Class")
    link = notebook.links.get(label="Class")
    client.post(share, {"action": "revoke_link", "link_id": link.pk})
    assert last("link.revoked").actor == alice


def test_an_accepted_invitation_is_the_invitees_event(notebook, alice):
    sharing.invite(owner_access(notebook), ["dora@example.com"], Role.VIEWER)
    dora = make_user("dora@example.com", "Dora")
    sharing.bind_invitations(dora)
    accepted = last("invitation.accepted")
    assert (accepted.actor, accepted.notebook_id) == (dora, notebook.pk)


async def test_a_link_guest_is_recorded_as_guest_via_the_label(notebook, alice):
    link, token = await database_sync_to_async(sharing.create_link)(
        await database_sync_to_async(owner_access)(notebook),
        label="Seminar",
        role=Role.EDITOR,
        require_login=False,
    )
    guest = Client(REMOTE_ADDR="198.51.100.9")
    response = await database_sync_to_async(guest.get)(f"/s/{token}")
    assert response.status_code == 302
    used = await database_sync_to_async(last)("link.used")
    assert (used.actor_id, used.link_id, used.actor_label, used.ip) == (
        None,
        link.pk,
        "Guest via Seminar",
        "198.51.100.9",
    )

    ws, connected = await connect(notebook.pk, f"sessionid={guest.cookies['sessionid'].value}")
    assert connected
    await ws.start()
    await ws.pump()
    await close_all(ws)
    for action in ("session.joined", "session.left"):
        event = await database_sync_to_async(last)(action)
        assert (event.actor_id, event.link_id, event.actor_label) == (None, link.pk, "Guest via Seminar")
    joined_event = await database_sync_to_async(last)("session.joined")
    assert joined_event.details == {"via": "link", "role": "editor"}


async def test_websocket_join_and_leave_are_the_users_events(notebook, alice, bob):
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=bob, role=Role.VIEWER)
    a = await joined(notebook.pk, alice)
    b = await joined(notebook.pk, bob)
    a.text().insert(0, "x = 1")
    await a.flush()
    await a.pump()
    await close_all(a, b)
    events = await database_sync_to_async(list)(
        AuditEvent.objects.filter(action__startswith="session.")
        .order_by("id")
        .values_list("action", "actor_id", "details")
    )
    assert ("session.joined", alice.pk, {"via": "owner", "role": "owner"}) in events
    assert ("session.joined", bob.pk, {"via": "direct", "role": "viewer"}) in events
    left = {actor: details for action, actor, details in events if action == "session.left"}
    assert left[alice.pk]["updates"] == 1
    assert left[bob.pk]["updates"] == 0


async def test_a_refused_socket_is_recorded_with_who_tried(notebook, charlie):
    cookie = await database_sync_to_async(cookie_for)(charlie)
    ws, _ = await connect(notebook.pk, cookie)
    await ws.comm.receive_output(2)
    denied = await database_sync_to_async(last)("access.denied")
    assert (denied.actor_id, denied.notebook_id) == (charlie.pk, notebook.pk)
    await ws.comm.disconnect()


def test_an_unknown_link_token_is_recorded(charlie):
    client_for(charlie).get("/s/not-a-real-token-at-all")
    denied = last("access.denied")
    assert (denied.actor, denied.details["reason"]) == (charlie, "unknown link token")
