"""Grants: change a role, remove a person from every path, hand the notebook over, leave it,
and the owner's "editors may share" setting. Who may do which is decided in `notebooks.access`.
Every change is audited in the same transaction and, once committed, re-checked on every live
socket of the notebook."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from audit import log as audit
from notebooks import access as acl
from notebooks.access import Access, Refused, Rule
from notebooks.actions import notify_after_commit
from notebooks.models import Grant, Invitation, LinkJoin, Removal, Role


def change_role(access: Access, grant_id: int, role: Role, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        grant = acl.get_or_refuse(_grants(access), grant_id, "person")
        acl.check_may_change_grant(access, grant, role)
        old, grant.role = grant.role, role
        grant.save(update_fields=["role"])
        audit.record(
            "grant.changed",
            notebook=access.notebook,
            request=request,
            email=grant.user.email,
            old=old,
            new=role.value,
            **access.audit_actor,
        )
        notify_after_commit(access.notebook.pk)


def _grants(access: Access):
    return Grant.objects.select_related("user").filter(notebook=access.notebook)


def remove_grant(access: Access, grant_id: int, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        grant = acl.get_or_refuse(_grants(access), grant_id, "person")
        acl.check_may_change_grant(access, grant)
        grant.delete()
        if grant.user_id != access.principal.user.pk:
            _close_other_paths(access, grant.user)
        _removed(access, grant.user, request)


def remove_person(access: Access, user_id, request=None) -> None:
    """Remove someone however they came in (a grant, links they joined): an owner's button
    next to a link's people, so one person goes without revoking the link for everyone."""
    acl.check_may_share(access)
    joined = LinkJoin.objects.filter(link__notebook=access.notebook).values("user_id")
    granted = Grant.objects.filter(notebook=access.notebook).values("user_id")
    people = User.objects.filter(Q(pk__in=joined) | Q(pk__in=granted)).exclude(pk=access.notebook.owner_id)
    with transaction.atomic():
        user = acl.get_or_refuse(people, user_id, "person")
        acl.check_may_remove_person(access, user)
        Grant.objects.filter(notebook=access.notebook, user=user).delete()
        _close_other_paths(access, user)
        _removed(access, user, request)


def _removed(access: Access, user, request) -> None:
    audit.record(
        "grant.removed", notebook=access.notebook, request=request, email=user.email, **access.audit_actor
    )
    notify_after_commit(access.notebook.pk)


def _close_other_paths(access: Access, user) -> None:
    """Removing a person removes every path: pending invitations to their addresses, the links
    they joined, and a `Removal` that keeps those links from letting them back in."""
    from allauth.account.models import EmailAddress

    emails = {
        user.email.lower(),
        *(e.lower() for e in EmailAddress.objects.filter(user=user).values_list("email", flat=True)),
    }
    Invitation.objects.filter(
        notebook=access.notebook, email__in=emails, accepted_at__isnull=True, withdrawn_at__isnull=True
    ).update(withdrawn_at=timezone.now())
    LinkJoin.objects.filter(link__notebook=access.notebook, user=user).delete()
    Removal.objects.update_or_create(
        notebook=access.notebook, user=user, defaults={"removed_by": access.principal.user}
    )


def transfer_ownership(access: Access, grant_id: int, request=None) -> None:
    """Make someone who already has access the owner; the former owner keeps edit-and-run."""
    acl.check_may_transfer(access)
    notebook = access.notebook
    with transaction.atomic():
        grant = acl.get_or_refuse(
            Grant.objects.select_related("user").filter(notebook=notebook), grant_id, "person"
        )
        new_owner, former = grant.user, notebook.owner
        grant.delete()
        notebook.owner = new_owner
        notebook.save(update_fields=["owner"])
        Grant.objects.update_or_create(
            notebook=notebook,
            user=former,
            defaults={"role": acl.FORMER_OWNER_ROLE, "via": Grant.Via.TRANSFER, "granted_by": former},
        )
        audit.record(
            "notebook.transferred",
            notebook=notebook,
            request=request,
            to=new_owner.email,
            **access.audit_actor,
        )
        notify_after_commit(notebook.pk)


def set_editors_can_share(access: Access, allowed: bool, request=None) -> None:
    acl.check_may_change_settings(access)
    with transaction.atomic():
        access.notebook.editors_can_share = allowed
        access.notebook.save(update_fields=["editors_can_share"])
        audit.record(
            "notebook.sharing_changed",
            notebook=access.notebook,
            request=request,
            editors_can_share=allowed,
            **access.audit_actor,
        )


def leave(access: Access, request=None) -> None:
    """Give up one's own access (grant and every link joined, also as a guest in this session)
    to a notebook one does not own."""
    user, notebook = access.principal.user, access.notebook
    if access.is_the_owner:
        raise Refused("You own this notebook: hand it over before leaving it.", Rule.OWNER_CANNOT_LEAVE)
    joined = Q(user=user)
    if access.principal.guest_key:
        joined |= Q(user__isnull=True, guest_key=access.principal.guest_key)
    with transaction.atomic():
        Grant.objects.filter(notebook=notebook, user=user).delete()
        LinkJoin.objects.filter(joined, link__notebook=notebook).delete()
        audit.record(
            "grant.removed", notebook=notebook, actor=user, request=request, email=user.email, left=True
        )
        notify_after_commit(notebook.pk)


def remove_guest(access: Access, join_id, request=None) -> None:
    """Remove a guest who came through a link, without revoking the link for everyone: their
    joins go and a `Removal` for their session keeps the links from letting them back in."""
    acl.check_may_share(access)
    acl.check_may_remove_guest(access)
    notebook = access.notebook
    guests = LinkJoin.objects.select_related("link").filter(link__notebook=notebook, user__isnull=True)
    with transaction.atomic():
        join = acl.get_or_refuse(guests, join_id, "guest")
        LinkJoin.objects.filter(link__notebook=notebook, user__isnull=True, guest_key=join.guest_key).delete()
        Removal.objects.update_or_create(
            notebook=notebook,
            user=None,
            guest_key=join.guest_key,
            defaults={"removed_by": access.principal.user},
        )
        audit.record(
            "guest.removed",
            notebook=notebook,
            request=request,
            link_label=join.link.label,
            **access.audit_actor,
        )
        notify_after_commit(notebook.pk)
