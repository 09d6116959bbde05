"""The principals of the permission matrix: every kind of person who may knock on a notebook,
made real (a user with a grant, a guest through a link, an expired or revoked link...)."""

from __future__ import annotations

from datetime import timedelta

from django.test import Client
from django.utils import timezone

from notebooks import actions, sharing
from notebooks.access import Action, access_notebook, principal_from_session
from notebooks.models import Grant, Role, ShareLink
from tests.support.cast import make_user

PRINCIPALS = [
    "owner",
    "editor",
    "runner",
    "viewer",
    "link-viewer",
    "link-editor",
    "link-runner",
    "expired-link",
    "revoked-link",
    "other-notebook-link",
    "stranger",
    "anonymous",
]


def owner_access(notebook):
    return access_notebook(principal_from_session(notebook.owner, None), notebook.pk, Action.OWN)


def link_guest(notebook, role: Role) -> tuple[Client, ShareLink]:
    link, token = sharing.create_link(
        owner_access(notebook), label=f"{role} link", role=role, require_login=False
    )
    client = Client()
    assert client.get(f"/s/{token}").status_code == 302
    return client, link


def principal(kind: str, notebook) -> Client:
    client = Client()
    if kind == "owner":
        client.force_login(notebook.owner)
    elif kind in ("editor", "runner", "viewer"):
        user = make_user(f"{kind}@example.com", kind.title())
        Grant.objects.create(notebook=notebook, user=user, role=Role(kind))
        client.force_login(user)
    elif kind.startswith("link-"):
        client, _ = link_guest(notebook, Role(kind.removeprefix("link-")))
    elif kind == "expired-link":
        client, link = link_guest(notebook, Role.EDITOR)
        ShareLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif kind == "revoked-link":
        client, link = link_guest(notebook, Role.EDITOR)
        sharing.revoke_link(owner_access(notebook), link.pk)
    elif kind == "other-notebook-link":
        other = actions.create_blank(notebook.owner, title="Other")
        client, _ = link_guest(other, Role.EDITOR)
    elif kind == "stranger":
        client.force_login(make_user("charlie@example.com", "Charlie"))
    return client
