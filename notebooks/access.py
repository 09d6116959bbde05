"""The one place where permissions are decided.

Pages, downloads, the websocket (on connect and on every update), kernel actions, sharing and
the audit log all ask `access_notebook()` (or `resolve()` when they already hold the notebook).
It either returns an `Access` or raises `NoAccess`, whose `code` (a `Denied`) says why; each
caller maps that to its own answer in one table (HTTP status, websocket close code).

Sharing asks the `check_*` functions below, which raise `Refused` with a `code` (a `Rule`)
naming the rule (callers branch on the code, never on the message). The rules:
- nobody grants, mints or changes a role above their own; only owners change or remove other
  people's grants; people who came through a link (guests) never share;
- a grant or link is capped by the current role of the person who made it, and dies with their
  access (a link whose maker is unknown is dead);
- the owner's kernel servers are the owner's: a co-owner does not see or choose them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from accounts.models import User, colour_for
from notebooks.crypto import hash_token  # noqa: F401  (callers use acl.hash_token)
from notebooks.models import Grant, LinkJoin, Notebook, Removal, Role, ShareLink
from notebooks.refusals import Denied, NoAccess, Refused, Rule, get_or_refuse  # noqa: F401


class Action(enum.Enum):
    VIEW = "view"
    EDIT = "edit"
    RUN = "run"
    SHARE = "share"
    OWN = "own"  # delete, restore, audit log
    KERNEL_SERVERS = "kernel_servers"  # the notebook's owner only: their own kernel servers


# How many "made by" hops a grant or link is followed back to the owner; deeper chains are dead.
MAX_SHARE_CHAIN = 8


# The role a former owner keeps after handing a notebook over.
FORMER_OWNER_ROLE = Role.RUNNER


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

    @property
    def aliases(self) -> tuple[str, ...]:
        """Who else this principal was: the guest of its session, before it signed in."""
        return (f"g:{self.guest_key}",) if self.user and self.guest_key else ()


def principal_from_session(user, session) -> Principal:
    """Build the principal from a request's (or websocket scope's) user and session. Which links
    it joined is read from `LinkJoin` rows, never from the session, so leaving really leaves."""
    guest_key = session.get("guest_key", "") if session is not None else ""
    if user is not None and user.is_authenticated:
        return Principal(user=user, guest_key=guest_key)
    return Principal(guest_key=guest_key)


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
    def ends_at(self) -> datetime | None:
        """When this access ends by itself, if that is known: the expiry of the link it came
        through (ownership and grants do not expire; an invitation expires only until it is
        accepted). Whether it has then ended is for a re-check to say: the link may have been
        extended, or another link or a grant may give access still."""
        return self.link.expires_at if self.link is not None else None

    @property
    def is_the_owner(self) -> bool:
        """The notebook's owner itself, not a co-owner by grant."""
        return self.via == "owner"

    @property
    def via_grant(self) -> bool:
        """Has access through a grant (direct, invitation or a former owner's)."""
        return self.via not in ("owner", "link")

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


def _capped(role: Role, cap: Role | None) -> Role | None:
    if cap is None:
        return None
    return role if role.rank <= cap.rank else cap


def sharer_role(notebook: Notebook, user_id, depth: int = 0) -> Role | None:
    """A sharer's own role through ownership or a grant (links never let anyone share): what
    the grants and links they made are capped at. None: they have no access any more (removed,
    or their account deactivated; an owner's deactivated account leaves the notebook shared)."""
    if user_id is None:
        return None
    if user_id == notebook.owner_id:
        return Role.OWNER
    if depth >= MAX_SHARE_CHAIN:
        return None
    grant = Grant.objects.filter(notebook=notebook, user_id=user_id, user__is_active=True).first()
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
    if principal_removed(notebook, principal):
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
    """Fetch a notebook and check that the principal may do `action` on it. Its document
    (`snapshot`, megabytes for a big notebook) is left out: a socket keeps its Access while it
    is open and every re-check fetches it again; the update log reads the document itself."""
    notebook = Notebook.objects.select_related("owner").defer("snapshot").filter(pk=notebook_id).first()
    if notebook is None or notebook.in_trash:
        raise NoAccess(Denied.NO_NOTEBOOK, "This notebook does not exist or was deleted.")
    access = resolve(principal, notebook)
    if access is None:
        if not principal.is_authenticated:
            raise NoAccess(Denied.SIGN_IN, "Sign in to open this notebook.")
        raise NoAccess(Denied.NO_ACCESS, "You do not have access to this notebook.")
    if not access.can(action):
        raise NoAccess(Denied.ROLE_TOO_LOW, f"Your role ({access.role.label.lower()}) does not allow this.")
    return access


def access_version(notebook_id) -> int:
    """How many sharing changes the notebook has had (`Notebook.access_version`); 0 if gone."""
    return Notebook.objects.filter(pk=notebook_id).values_list("access_version", flat=True).first() or 0


def recheck(principal: Principal, notebook_id, previous: Access | None) -> Access:
    """Access again for someone already in (a live socket, after a sharing change): losing it
    is told as a link gone (they came through one) or a removal, not as a first refusal. An
    account deactivated meanwhile has none: its pages sign it out at their next request
    (Django's session reads the account again), its sockets only here."""
    user = principal.user
    if user is not None and not User.objects.filter(pk=user.pk, is_active=True).exists():
        raise NoAccess(Denied.REMOVED, "This account was deactivated.")
    try:
        return access_notebook(principal, notebook_id)
    except NoAccess as e:
        notebook = previous.notebook if previous is not None else None
        if notebook is not None and principal_removed(notebook, principal):
            raise NoAccess(Denied.REMOVED, "The owner removed you from this notebook.") from None
        if previous is not None and previous.via == "link":
            raise NoAccess(Denied.LINK_GONE, "The link you used is no longer valid.") from None
        if e.code in (Denied.NO_ACCESS, Denied.SIGN_IN) and previous is not None:
            raise NoAccess(Denied.REMOVED, "Your access to this notebook was removed.") from None
        raise


def access_trashed(principal: Principal, notebook_id) -> Notebook:
    """A notebook in the trash; only its owner may restore or purge it."""
    notebook = Notebook.objects.filter(pk=notebook_id, deleted_at__isnull=False).first()
    if notebook is None or principal.user is None or notebook.owner_id != principal.user.pk:
        raise NoAccess(Denied.NO_NOTEBOOK, "There is no such notebook in your trash.")
    return notebook


def is_removed(notebook: Notebook, user) -> bool:
    return Removal.objects.filter(notebook=notebook, user=user).exists()


def principal_removed(notebook: Notebook, principal: Principal) -> bool:
    """Removed as a user, or as the guest this session is (links no longer let them in)."""
    who = Q(pk__in=[])
    if principal.user is not None:
        who |= Q(user=principal.user)
    if principal.guest_key:
        who |= Q(user__isnull=True, guest_key=principal.guest_key)
    return Removal.objects.filter(who, notebook=notebook).exists()


# sharing rules: each raises Refused with a code, or returns quietly


def check_not_removed(notebook: Notebook, user, guest_key: str = "") -> None:
    """Someone an owner removed (a user, or a guest by session) does not come back through a link."""
    if principal_removed(notebook, Principal(user=user, guest_key=guest_key)):
        raise Refused(
            "The owner removed you from this notebook; ask them to share it with you again.", Rule.REMOVED
        )


def check_may_readd(access: Access, user) -> None:
    """Only an owner lets back someone an owner removed."""
    if not access.role.is_owner() and is_removed(access.notebook, user):
        reason = f"An owner removed {user.email}; only an owner can share with them again."
        raise Refused(reason, Rule.REMOVED)


def check_link_joinable(link: ShareLink, user, guest_key: str = "") -> None:
    """May this person (user None: a guest, by session key) join this link now? `link` comes
    from `ShareLink.objects.with_validity()`."""
    if not link.valid_now or link.notebook.in_trash:
        raise Refused("This link was revoked or has expired. Ask the owner for a new one.", Rule.LINK_INVALID)
    if link_role(link.notebook, link) is None:
        reason = "This link no longer works: whoever made it lost access. Ask the owner for a new one."
        raise Refused(reason, Rule.LINK_INVALID)
    check_not_removed(link.notebook, user, guest_key)
    if link.require_login and user is None:
        raise Refused("Sign in to open this link.", Rule.LOGIN_REQUIRED)


def invitation_may_bind(invitation, user) -> bool:
    """A pending invitation becomes a grant for `user` unless an owner removed them and the
    inviter is not an owner (only an owner lets back someone an owner removed)."""
    if not is_removed(invitation.notebook, user):
        return True
    return sharer_role(invitation.notebook, invitation.invited_by_id) is Role.OWNER


def grantable_roles(access: Access) -> list[Role]:
    """The roles this person may give on the share page: up to their own, never owner."""
    return [r for r in Role if r is not Role.OWNER and r.rank <= access.role.rank]


def may_share_now(principal: Principal, notebook: Notebook) -> bool:
    """After a change on the share page: does its author still see the share page?"""
    access = resolve(principal, notebook)
    return access is not None and access.can(Action.SHARE)


def is_owners_server(notebook: Notebook, server) -> bool:
    """A kernel server counts for a notebook only if it is its owner's own."""
    return server is not None and server.owner_id == notebook.owner_id


def check_may_share(access: Access) -> None:
    if access.is_guest:
        raise Refused("People who came through a share link cannot share the notebook.", Rule.GUEST)
    if not access.can(Action.SHARE):
        raise Refused("Only the owner can share this notebook.", Rule.MAY_NOT_SHARE)


def check_role_within_own(access: Access, role: Role) -> None:
    """Nobody grants, mints or changes a role above their own."""
    if role.rank > access.role.rank:
        raise Refused(
            f"You cannot give a role above your own ({access.role.label.lower()}).", Rule.ABOVE_OWN_ROLE
        )


def check_link_role(access: Access, role: Role) -> None:
    if role is Role.OWNER:
        raise Refused("A link can give at most the right to edit and run.", Rule.LINK_OWNER_ROLE)
    check_role_within_own(access, role)


def check_may_change_grant(access: Access, grant: Grant, role: Role | None = None) -> None:
    """Owners change or remove anyone's grant; others only lower or drop their own."""
    mine = access.principal.user is not None and grant.user_id == access.principal.user.pk
    if not mine and not access.role.is_owner():
        raise Refused("Only an owner can change or remove other people's access.", Rule.OWNER_ONLY)
    if role is not None:
        check_role_within_own(access, role)


def check_may_remove_person(access: Access, user) -> None:
    """Removing someone from every path they have is for owners, and never of oneself (leave)."""
    if not access.role.is_owner():
        raise Refused("Only an owner can remove people.", Rule.OWNER_ONLY)
    if access.principal.user is not None and user.pk == access.principal.user.pk:
        raise Refused("To give up your own access, leave the notebook.", Rule.USE_LEAVE)


def check_may_remove_guest(access: Access) -> None:
    """Removing a guest who came through a link (without revoking the link) is for owners."""
    if not access.role.is_owner():
        raise Refused("Only an owner can remove people.", Rule.OWNER_ONLY)


def check_may_copy_link(access: Access, link: ShareLink) -> None:
    """A live link is copied again by an owner or by whoever made it (never by a sharer with a
    lower role, who would reach the notebook with the link's higher role)."""
    check_may_share(access)
    mine = access.principal.user is not None and link.created_by_id == access.principal.user.pk
    if not (access.role.is_owner() or mine):
        raise Refused("Only an owner or the person who made a link can copy it.", Rule.OWNER_ONLY)
    role = link_role(access.notebook, link)
    if role is None or role.rank > access.role.rank:
        raise Refused("This link gives more than your own role; ask an owner for it.", Rule.ABOVE_OWN_ROLE)


def may(check, *args) -> bool:
    """A check's answer as a bool, for pages that show a button only to those it allows."""
    try:
        check(*args)
    except Refused:
        return False
    return True


def check_general_access(access: Access, level: str, role: Role | None) -> None:
    """General access is changed by those who may share, to a role no higher than their own
    (never owner); a general access set higher by someone else is changed by an owner only."""
    check_may_share(access)
    if role is not None:
        check_link_role(access, role)
    current = ShareLink.objects.usable().filter(notebook=access.notebook, general=True).first()
    if current is not None and Role(current.role).rank > access.role.rank:
        raise Refused(
            "General access gives more than your own role; only an owner can change it.", Rule.OWNER_ONLY
        )


def check_may_manage(access: Access, made_by_id) -> None:
    """A link or invitation is revoked, resent or withdrawn by an owner or by whoever made it."""
    if access.role.is_owner():
        return
    if access.principal.user is None or made_by_id != access.principal.user.pk:
        raise Refused("Only an owner or the person who made it can change this.", Rule.OWNER_ONLY)


def check_may_transfer(access: Access) -> None:
    if not access.is_the_owner:
        raise Refused("Only the owner can hand the notebook over.", Rule.NOT_THE_OWNER)


def check_may_change_settings(access: Access) -> None:
    if not access.role.is_owner():
        raise Refused("Only an owner can change who may share.", Rule.OWNER_ONLY)


# access requests (notebooks.requests)

REQUESTABLE_ROLES = [Role.VIEWER, Role.EDITOR, Role.RUNNER]  # what one may ask for


def roles_to_request(current: Access | None) -> list[Role]:
    """The roles someone with `current` access (None: none) may ask for: those above it."""
    return [r for r in REQUESTABLE_ROLES if current is None or r.rank > current.role.rank]


def roles_to_approve(access: Access, current: Access | None) -> list[Role]:
    """The roles `access` may approve for someone holding `current`: above what they have, up
    to the approver's own role."""
    above = current.role.rank if current is not None else -1
    return [r for r in REQUESTABLE_ROLES if above < r.rank <= access.role.rank]


def check_approval_raises(current: Access | None, role: Role, name: str) -> None:
    """Approving never lowers a role: `role` must be above what the requester has."""
    if current is not None and current.role.rank >= role.rank:
        raise Refused(
            f"{name} already has “{current.role.label.lower()}”: approve a higher role or decline.",
            Rule.HAS_ROLE,
        )


def check_may_request(principal: Principal, notebook: Notebook, role: Role) -> None:
    """A signed-in person asks for a role above the one they have (owners have everything)."""
    if principal.user is None:
        raise Refused("Sign in to ask for access.", Rule.LOGIN_REQUIRED)
    if role is Role.OWNER:
        raise Refused("You can ask to view, edit, or edit and run.", Rule.BAD_ROLE)
    current = resolve(principal, notebook)
    if current is not None and current.role.rank >= role.rank:
        raise Refused(f"You already have this access ({current.role.label.lower()}).", Rule.HAS_ROLE)


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
        raise Refused("Only the person who ran this cell can answer its input().", Rule.NOT_THE_RUNNER)
