"""The one place where permissions are decided.

Pages, downloads, the websocket (on connect and on every update), kernel actions, sharing and
the audit log all ask `access_notebook()` (or `resolve()` when they already hold the notebook).
It either returns an `Access` or raises `NoAccess`, whose `code` says what the caller should
do: 4401 sign in (or the link is no longer valid), 4403 no access, 4404 no such notebook.

Sharing asks the `check_*` functions below, which raise `Refused` with a `code` naming the rule
(callers branch on the code, never on the message). The rules:
- nobody grants, mints or changes a role above their own; only owners change or remove other
  people's grants; people who came through a link (guests) never share;
- a grant or link is capped by the current role of the person who made it, and dies with their
  access (a link whose maker is unknown is dead);
- the owner's kernel servers are the owner's: a co-owner does not see or choose them.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from django.db.models import Q

from accounts.models import colour_for
from notebooks.models import Grant, LinkJoin, Notebook, Removal, Role, ShareLink


class Action(enum.Enum):
    VIEW = "view"
    EDIT = "edit"
    RUN = "run"
    SHARE = "share"
    OWN = "own"  # delete, restore, audit log
    KERNEL_SERVERS = "kernel_servers"  # the notebook's owner only: their own kernel servers


# How many "made by" hops a grant or link is followed back to the owner; deeper chains are dead.
MAX_SHARE_CHAIN = 8


class NoAccess(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Refused(ValueError):
    """A sharing request the rules refuse. `code` names the rule; the message is for people."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user, or an anonymous guest who opened share links."""

    user: object | None = None  # accounts.User
    guest_key: str = ""  # the session's guest identity; a signed-in user keeps the links it joined

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None

    @property
    def key(self) -> str:
        return f"u:{self.user.pk}" if self.user else f"g:{self.guest_key}"


def principal_from_session(user, session) -> Principal:
    """Build the principal from a request's (or websocket scope's) user and session. Which links
    it joined is read from `LinkJoin` rows, never from the session, so leaving really leaves."""
    guest_key = session.get("guest_key", "") if session is not None else ""
    if user is not None and user.is_authenticated:
        return Principal(user=user, guest_key=guest_key)
    return Principal(guest_key=guest_key)


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
        if action is Action.KERNEL_SERVERS:
            return self.is_the_owner
        if action is Action.SHARE and self.is_guest:
            return False
        return _allows(self.role, action, self.notebook)

    @property
    def is_the_owner(self) -> bool:
        """The notebook's owner itself, not a co-owner by grant."""
        return self.via == "owner"

    @property
    def is_guest(self) -> bool:
        """Came through a share link (signed in or not): guests never share."""
        return self.via == "link" or self.principal.user is None

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

    @property
    def audit_actor(self) -> dict:
        """Who did it, as `audit.log.record()` takes it."""
        return {"actor": self.principal.user, "link": self.link, "label": self.actor_label}


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
    return link.is_usable(now)


def _capped(role: Role, cap: Role | None) -> Role | None:
    if cap is None:
        return None
    return role if role.rank <= cap.rank else cap


def sharer_role(notebook: Notebook, user_id, depth: int = 0) -> Role | None:
    """A sharer's own role through ownership or a grant (links never let anyone share): what
    the grants and links they made are capped at. None: they have no access any more."""
    if user_id is None:
        return None
    if user_id == notebook.owner_id:
        return Role.OWNER
    if depth >= MAX_SHARE_CHAIN:
        return None
    grant = Grant.objects.filter(notebook=notebook, user_id=user_id).first()
    return grant_role(notebook, grant, depth + 1) if grant is not None else None


def grant_role(notebook: Notebook, grant: Grant, depth: int = 0) -> Role | None:
    """A grant's role, capped by its granter's. A grant from the owner, from nobody recorded
    (made before granters were kept) or to the granter themself (a former owner) is not capped."""
    role = Role(grant.role)
    granter = grant.granted_by_id
    if granter is None or granter in (grant.user_id, notebook.owner_id):
        return role
    return _capped(role, sharer_role(notebook, granter, depth))


def link_role(notebook: Notebook, link: ShareLink) -> Role | None:
    """A link's role, capped by its maker's; a link whose maker is unknown or gone is dead."""
    return _capped(Role(link.role), sharer_role(notebook, link.created_by_id))


def _link_access(principal: Principal, notebook: Notebook) -> tuple[Role, ShareLink] | None:
    """The best role any still-valid link this principal joined gives on this notebook."""
    if principal.user is not None and is_removed(notebook, principal.user):
        return None
    joined = Q(pk__in=[])
    if principal.user is not None:
        joined |= Q(user=principal.user)
    if principal.guest_key:
        joined |= Q(user__isnull=True, guest_key=principal.guest_key)
    join_links = LinkJoin.objects.filter(joined, link__notebook=notebook).values("link_id")
    best: tuple[Role, ShareLink] | None = None
    for link in ShareLink.objects.usable().filter(notebook=notebook, id__in=join_links):
        if link.require_login and principal.user is None:
            continue
        role = link_role(notebook, link)
        if role is not None and (best is None or role.rank > best[0].rank):
            best = (role, link)
    return best


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
        role = grant_role(notebook, grant) if grant is not None else None
        if role is not None:
            best = Access(notebook, principal, role, grant.via)
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


def is_removed(notebook: Notebook, user) -> bool:
    return Removal.objects.filter(notebook=notebook, user=user).exists()


def get_or_refuse(queryset, pk, what: str):
    """One row (of a queryset already limited to the notebook) by id, or Refused naming what."""
    try:
        return queryset.get(pk=int(str(pk)))
    except (TypeError, ValueError):
        raise Refused(f"“{str(pk)[:40]}” is not a valid {what} id.", "bad_id") from None
    except queryset.model.DoesNotExist:
        raise Refused(f"There is no such {what} on this notebook.", "not_found") from None


# sharing rules: each raises Refused with a code, or returns quietly


def check_not_removed(notebook: Notebook, user) -> None:
    """Someone an owner removed does not come back through a link."""
    if user is not None and is_removed(notebook, user):
        raise Refused(
            "The owner removed you from this notebook; ask them to share it with you again.", "removed"
        )


def check_may_readd(access: Access, user) -> None:
    """Only an owner lets back someone an owner removed."""
    if not access.role.is_owner() and is_removed(access.notebook, user):
        raise Refused(f"An owner removed {user.email}; only an owner can share with them again.", "removed")


def check_may_share(access: Access) -> None:
    if access.is_guest:
        raise Refused("People who came through a share link cannot share the notebook.", "guest")
    if not access.can(Action.SHARE):
        raise Refused("Only the owner can share this notebook.", "may_not_share")


def check_role_within_own(access: Access, role: Role) -> None:
    """Nobody grants, mints or changes a role above their own."""
    if role.rank > access.role.rank:
        raise Refused(
            f"You cannot give a role above your own ({access.role.label.lower()}).", "above_own_role"
        )


def check_link_role(access: Access, role: Role) -> None:
    if role is Role.OWNER:
        raise Refused("A link can give at most the right to edit and run.", "link_owner_role")
    check_role_within_own(access, role)


def check_may_change_grant(access: Access, grant: Grant, role: Role | None = None) -> None:
    """Owners change or remove anyone's grant; others only lower or drop their own."""
    mine = access.principal.user is not None and grant.user_id == access.principal.user.pk
    if not mine and not access.role.is_owner():
        raise Refused("Only an owner can change or remove other people's access.", "owner_only")
    if role is not None:
        check_role_within_own(access, role)


def check_may_remove_person(access: Access, user) -> None:
    """Removing someone from every path they have is for owners, and never of oneself (leave)."""
    if not access.role.is_owner():
        raise Refused("Only an owner can remove people.", "owner_only")
    if access.principal.user is not None and user.pk == access.principal.user.pk:
        raise Refused("To give up your own access, leave the notebook.", "use_leave")


def check_may_manage(access: Access, made_by_id) -> None:
    """A link or invitation is revoked, resent or withdrawn by an owner or by whoever made it."""
    if access.role.is_owner():
        return
    if access.principal.user is None or made_by_id != access.principal.user.pk:
        raise Refused("Only an owner or the person who made it can change this.", "owner_only")


def check_may_transfer(access: Access) -> None:
    if not access.is_the_owner:
        raise Refused("Only the owner can hand the notebook over.", "not_the_owner")


def check_may_change_settings(access: Access) -> None:
    if not access.role.is_owner():
        raise Refused("Only an owner can change who may share.", "owner_only")


# access requests (notebooks.requests)


def check_may_request(principal: Principal, notebook: Notebook, role: Role) -> None:
    """A signed-in person asks for a role above the one they have (owners have everything)."""
    if principal.user is None:
        raise Refused("Sign in to ask for access.", "login_required")
    if role is Role.OWNER:
        raise Refused("You can ask to view, edit, or edit and run.", "bad_role")
    current = resolve(principal, notebook)
    if current is not None and current.role.rank >= role.rank:
        raise Refused(f"You already have this access ({current.role.label.lower()}).", "has_role")


def may_approve_request(access: Access, requester, role: Role) -> bool:
    """Whoever may share at that role, as sharing decides it: not a guest, a role at least the
    one asked for; people who already have a grant, or whom an owner removed, need an owner."""
    if access.is_guest or not access.can(Action.SHARE) or role.rank > access.role.rank:
        return False
    if access.role.is_owner():
        return True
    has_grant = Grant.objects.filter(notebook=access.notebook, user=requester).exists()
    return not has_grant and not is_removed(access.notebook, requester)


def check_may_answer_input(who: str, asked: str) -> None:
    """Only the person who ran a cell answers its `input()` (a prompt may ask for a password):
    `who` is the answering principal's key, `asked` the key of the one who ran the cell."""
    if not who or who != asked:
        raise Refused("Only the person who ran this cell can answer its input().", "not_the_runner")
