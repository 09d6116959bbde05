"""The share page's "People with access": everyone who can open a notebook now and why. One
row per person (the owner, each user with a grant or a link join, each guest session, each
pending invitation), with every path they have, the role each path gives (as capped by whoever
made it), their effective role (what `notebooks.access` resolves for them, the highest path)
and whether they have a live socket now (`notebooks.live`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from notebooks import access as acl
from notebooks import live
from notebooks.models import Grant, Invitation, LinkJoin, Notebook, Role, ShareLink


@dataclass
class Path:
    kind: str  # "owner", "grant", "invitation", "link"
    label: str
    role: Role | None  # None: this path gives nothing now (its maker lost access)
    grant: Grant | None = None
    link: ShareLink | None = None
    invitation: Invitation | None = None


@dataclass
class Person:
    key: str  # Principal.key, or "i:<id>" for a pending invitation
    name: str
    email: str = ""
    user: object | None = None
    guest_join: LinkJoin | None = None  # a guest: one of their joins (the Remove button's id)
    paths: list[Path] = field(default_factory=list)
    role: Role | None = None
    live: bool = False

    @property
    def is_owner(self) -> bool:
        return any(p.kind == "owner" for p in self.paths)

    @property
    def grant(self) -> Grant | None:
        return next((p.grant for p in self.paths if p.grant is not None), None)

    @property
    def is_invitation(self) -> bool:
        return self.key.startswith("i:")


def people_with_access(notebook: Notebook) -> list[Person]:
    people: dict[str, Person] = {}
    owner = notebook.owner
    people[f"u:{owner.pk}"] = Person(
        f"u:{owner.pk}", owner.name, owner.email, owner, paths=[Path("owner", "Owner", Role.OWNER)]
    )
    for grant in notebook.grants.select_related("user", "granted_by"):
        person = _user(people, grant.user)
        role = acl.grant_role(notebook, grant)
        person.paths.append(Path("grant", grant.get_via_display(), role, grant=grant))
    usable = ShareLink.objects.usable().filter(notebook=notebook)
    for join in LinkJoin.objects.filter(link__in=usable).select_related("user", "link").order_by("pk"):
        if join.user is not None:
            person = _user(people, join.user)
        else:
            key = f"g:{join.guest_key}"
            person = people.setdefault(key, Person(key, f"Guest via {join.link.label}", guest_join=join))
        role = acl.link_role(notebook, join.link)
        person.paths.append(Path("link", f"Link “{join.link.label}”", role, link=join.link))
    for person in people.values():
        person.role = _effective(notebook, person)
    listed = [p for p in people.values() if p.role is not None]
    for invitation in notebook.invitations.filter(accepted_at__isnull=True, withdrawn_at__isnull=True):
        role = Role(invitation.role)
        path = Path("invitation", "Pending invitation", role, invitation=invitation)
        listed.append(Person(f"i:{invitation.pk}", "", invitation.email, paths=[path], role=role))
    now_live = live.live_keys(notebook.pk)
    for person in listed:
        person.live = person.key in now_live
    return sorted(listed, key=lambda p: (not p.is_owner, p.is_invitation, p.name.lower(), p.email))


def _user(people: dict[str, Person], user) -> Person:
    key = f"u:{user.pk}"
    return people.setdefault(key, Person(key, user.name, user.email, user))


def _effective(notebook: Notebook, person: Person) -> Role | None:
    """What access resolves for them (the highest of their paths, removals and caps applied)."""
    if person.user is not None:
        principal = acl.Principal(user=person.user)
    else:
        principal = acl.Principal(guest_key=person.guest_join.guest_key)
    resolved = acl.resolve(principal, notebook)
    return resolved.role if resolved is not None else None
