"""The one place where permissions are decided.

Pages, downloads, the websocket (on connect and on every update), kernel actions, sharing and
the audit log all ask `access_notebook()` (or `resolve()` when they already hold the notebook).
It either returns an `Access` or raises `NoAccess`, whose `code` says what the caller should
do: 4401 sign in (or the link is no longer valid), 4403 no access, 4404 no such notebook.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from django.db.models import Q
from django.utils import timezone

from accounts.models import colour_for
from notebooks.models import Grant, LinkJoin, Notebook, Role, ShareLink


class Action(enum.Enum):
    VIEW = "view"
    EDIT = "edit"
    RUN = "run"
    SHARE = "share"
    OWN = "own"  # delete, restore, transfer, audit log, kernel settings


class NoAccess(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user, or an anonymous guest who opened share links."""

    user: object | None = None  # accounts.User
    guest_key: str = ""
    link_ids: tuple[int, ...] = field(default=())

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None

    @property
    def key(self) -> str:
        return f"u:{self.user.pk}" if self.user else f"g:{self.guest_key}"


def principal_from_session(user, session) -> Principal:
    """Build the principal from a request's (or websocket scope's) user and session."""
    link_ids = tuple(int(i) for i in session.get("link_ids", [])) if session is not None else ()
    if user is not None and user.is_authenticated:
        return Principal(user=user, link_ids=link_ids)
    guest_key = session.get("guest_key", "") if session is not None else ""
    return Principal(guest_key=guest_key, link_ids=link_ids)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Access:
    notebook: Notebook
    principal: Principal
    role: Role
    via: str  # "owner", "grant", "invitation", "link"
    link: ShareLink | None = None

    def can(self, action: Action) -> bool:
        return _allows(self.role, action, self.notebook)

    @property
    def identity(self) -> dict:
        """Who this is, as stamped into awareness and shown to others."""
        p = self.principal
        if p.user is not None:
            return {"id": p.key, "name": p.user.name, "color": p.user.colour, "role": self.role.value}
        label = self.link.label if self.link else "link"
        return {
            "id": p.key,
            "name": f"Guest via {label}",
            "color": colour_for(p.key),
            "role": self.role.value,
        }

    @property
    def actor_label(self) -> str:
        return self.identity["name"]


def _allows(role: Role, action: Action, notebook: Notebook) -> bool:
    if action is Action.VIEW:
        return True
    if action is Action.EDIT:
        return role.can_edit()
    if action is Action.RUN:
        return role.can_run()
    if action is Action.SHARE:
        return role.is_owner() or (notebook.editors_can_share and role.can_edit())
    return role.is_owner()


def link_is_valid(link: ShareLink, now=None) -> bool:
    now = now or timezone.now()
    return link.revoked_at is None and (link.expires_at is None or link.expires_at > now)


def _link_access(principal: Principal, notebook: Notebook) -> tuple[Role, ShareLink] | None:
    """The best role any still-valid link gives this principal on this notebook."""
    joined = Q(id__in=principal.link_ids)
    if principal.user is not None:
        joined |= Q(id__in=LinkJoin.objects.filter(user=principal.user).values("link_id"))
    now = timezone.now()
    links = ShareLink.objects.filter(joined, notebook=notebook, revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    links = [link for link in links if link.require_login is False or principal.user is not None]
    if not links:
        return None
    best = max(links, key=lambda link: Role(link.role).rank)
    return Role(best.role), best


def resolve(principal: Principal, notebook: Notebook) -> Access | None:
    """The principal's access to a notebook, or None."""
    if notebook.in_trash:
        return None
    user = principal.user
    if user is not None and notebook.owner_id == user.pk:
        return Access(notebook, principal, Role.OWNER, "owner")
    best: Access | None = None
    if user is not None:
        grant = Grant.objects.filter(notebook=notebook, user=user).first()
        if grant is not None:
            best = Access(notebook, principal, Role(grant.role), grant.via)
    via_link = _link_access(principal, notebook)
    if via_link is not None and (best is None or via_link[0].rank > best.role.rank):
        best = Access(notebook, principal, via_link[0], "link", via_link[1])
    return best


def access_notebook(principal: Principal, notebook_id, action: Action = Action.VIEW) -> Access:
    """Fetch a notebook and check that the principal may do `action` on it."""
    notebook = Notebook.objects.select_related("owner").filter(pk=notebook_id).first()
    if notebook is None or notebook.in_trash:
        raise NoAccess(4404, "This notebook does not exist or was deleted.")
    access = resolve(principal, notebook)
    if access is None:
        if not principal.is_authenticated:
            raise NoAccess(4401, "Sign in to open this notebook.")
        raise NoAccess(4403, "You do not have access to this notebook.")
    if not access.can(action):
        raise NoAccess(4403, f"Your role ({access.role.label.lower()}) does not allow this.")
    return access


def access_trashed(principal: Principal, notebook_id) -> Notebook:
    """A notebook in the trash; only its owner may restore or purge it."""
    notebook = Notebook.objects.filter(pk=notebook_id, deleted_at__isnull=False).first()
    if notebook is None or principal.user is None or notebook.owner_id != principal.user.pk:
        raise NoAccess(4404, "There is no such notebook in your trash.")
    return notebook
