"""Sharing: grants, email invitations, transfer and leaving (share links live in
`notebooks.links`, re-exported here). Every change is audited in the same transaction and, once
committed, re-checked on every live socket of the notebook."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit import log as audit
from config.cache import count_up
from notebooks import access as acl
from notebooks import emails as mail
from notebooks.access import Access, Refused, hash_token
from notebooks.actions import notify_after_commit
from notebooks.links import (  # noqa: F401  (the sharing API: callers use sharing.create_link ...)
    LINK_GUESSES_PER_IP,
    create_link,
    note_if_expired,
    open_link,
    revoke_link,
)
from notebooks.models import Grant, Invitation, LinkJoin, Removal, Role

INVITATION_DAYS = 14
INVITATIONS_PER_HOUR = 200  # a class roster fits; a spam run does not


class ShareError(Refused):
    """A sharing request that cannot be done; the message says why, the code which rule."""


# grants and invitations


def invite(access: Access, emails: list[str], role: Role, request=None, message: str = "") -> list[str]:
    """Give existing users the role at once; send everyone else a pending invitation."""
    message = mail.clean_message(message)
    acl.check_may_share(access)
    acl.check_role_within_own(access, role)
    emails = list(dict.fromkeys(e.strip().lower() for e in emails if e.strip()))
    invalid = [e for e in emails if not _valid_email(e)]
    if invalid:
        raise ShareError(f"Not an email address: {', '.join(invalid[:5])}. Nobody was invited.")
    _check_invitees(access, emails, role)
    _check_send_rate(access, len(emails))
    done = []
    for email in emails:
        user = _verified_user(email)
        if user is not None and user.pk == access.notebook.owner_id:
            continue
        with transaction.atomic():
            if user is not None:
                Removal.objects.filter(notebook=access.notebook, user=user).delete()
                Grant.objects.update_or_create(
                    notebook=access.notebook,
                    user=user,
                    defaults={"role": role, "granted_by": access.principal.user},
                )
                audit.record(
                    "grant.added",
                    notebook=access.notebook,
                    request=request,
                    email=email,
                    role=role.value,
                    **access.audit_actor,
                )
                notify_after_commit(access.notebook.pk)
                mail.shared(access.notebook, access.actor_label, email, role.label, message, request)
            else:
                token = secrets.token_urlsafe(24)
                Invitation.objects.create(
                    notebook=access.notebook,
                    email=email,
                    role=role,
                    token_hash=hash_token(token),
                    invited_by=access.principal.user,
                    sent_at=timezone.now(),
                    expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
                )
                audit.record(
                    "invitation.sent",
                    notebook=access.notebook,
                    request=request,
                    email=email,
                    role=role.value,
                    **access.audit_actor,
                )
                mail.invitation(
                    access.notebook,
                    access.actor_label,
                    email,
                    token,
                    role.label,
                    message,
                    request,
                    INVITATION_DAYS,
                )
        done.append(email)
    return done


def _check_invitees(access: Access, emails: list[str], role: Role) -> None:
    """Before anything is sent: inviting someone who already has a grant changes it, and
    inviting someone an owner removed lets them back; only owners may do either."""
    from allauth.account.models import EmailAddress

    from accounts.models import User

    users = User.objects.filter(
        Q(email__in=emails) | Q(pk__in=EmailAddress.objects.filter(email__in=emails).values("user_id"))
    )
    for user in users.exclude(pk=access.notebook.owner_id):
        acl.check_may_readd(access, user)
        grant = Grant.objects.filter(notebook=access.notebook, user=user).first()
        if grant is not None:
            acl.check_may_change_grant(access, grant, role)


def _verified_user(email: str):
    """The account that has verified this address. An account that only typed it in gets a
    pending invitation instead, which binds once the address is verified."""
    from allauth.account.models import EmailAddress

    address = EmailAddress.objects.filter(email__iexact=email, verified=True).select_related("user").first()
    return address.user if address is not None else None


def _valid_email(email: str) -> bool:
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    try:
        validate_email(email)
    except ValidationError:
        return False
    return True


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
    from accounts.models import User

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


def resend_invitation(access: Access, invitation_id: int, request=None) -> None:
    acl.check_may_share(access)
    pending = Invitation.objects.filter(
        notebook=access.notebook, accepted_at__isnull=True, withdrawn_at__isnull=True
    )
    acl.check_may_manage(access, acl.get_or_refuse(pending, invitation_id, "invitation").invited_by_id)
    _check_send_rate(access, 1)
    with transaction.atomic():
        invitation = acl.get_or_refuse(pending, invitation_id, "invitation")
        token = secrets.token_urlsafe(24)  # only the hash is kept: the reminder carries a new one
        invitation.sent_at = timezone.now()
        invitation.expires_at = timezone.now() + timedelta(days=INVITATION_DAYS)
        invitation.token_hash = hash_token(token)
        invitation.save(update_fields=["sent_at", "expires_at", "token_hash"])
        audit.record(
            "invitation.sent",
            notebook=access.notebook,
            request=request,
            email=invitation.email,
            role=invitation.role,
            resent=True,
            **access.audit_actor,
        )
        mail.invitation(
            access.notebook,
            access.actor_label,
            invitation.email,
            token,
            invitation.get_role_display(),
            "",
            request,
            INVITATION_DAYS,
            reminder=True,
        )


def _check_send_rate(access: Access, count: int) -> None:
    """At most INVITATIONS_PER_HOUR emails per person per hour."""
    key = f"invites:{access.principal.key}"
    if cache.get(key, 0) + count > INVITATIONS_PER_HOUR:
        raise ShareError(f"You can send at most {INVITATIONS_PER_HOUR} invitations an hour; try again later.")
    count_up(key, count)


def withdraw_invitation(access: Access, invitation_id: int, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        invitation = acl.get_or_refuse(
            Invitation.objects.filter(notebook=access.notebook), invitation_id, "invitation"
        )
        acl.check_may_manage(access, invitation.invited_by_id)
        invitation.withdrawn_at = timezone.now()
        invitation.save(update_fields=["withdrawn_at"])
        audit.record(
            "invitation.withdrawn",
            notebook=access.notebook,
            request=request,
            email=invitation.email,
            **access.audit_actor,
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
            defaults={"role": Role.RUNNER, "via": Grant.Via.TRANSFER, "granted_by": former},
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
        raise ShareError("You own this notebook: hand it over before leaving it.", "owner_cannot_leave")
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


def bind_invitations(user, request=None) -> int:
    """Turn pending invitations for the user's verified addresses into grants."""
    from allauth.account.models import EmailAddress

    emails = list(EmailAddress.objects.filter(user=user, verified=True).values_list("email", flat=True))
    if not emails:
        return 0
    now = timezone.now()
    pending = Invitation.objects.filter(
        email__in=[e.lower() for e in emails],
        accepted_at__isnull=True,
        withdrawn_at__isnull=True,
        expires_at__gt=now,
    ).select_related("notebook")
    bound = 0
    for invitation in pending:
        removed = Removal.objects.filter(notebook=invitation.notebook, user=user).exists()
        if removed and acl.sharer_role(invitation.notebook, invitation.invited_by_id) != Role.OWNER:
            continue  # only an owner lets back someone an owner removed, by any address of theirs
        with transaction.atomic():
            grant, created = Grant.objects.get_or_create(
                notebook=invitation.notebook,
                user=user,
                defaults={
                    "role": invitation.role,
                    "via": Grant.Via.INVITATION,
                    "granted_by": invitation.invited_by,
                },
            )
            if not created and Role(invitation.role).rank > Role(grant.role).rank:
                grant.role = invitation.role
                grant.save(update_fields=["role"])
            Removal.objects.filter(notebook=invitation.notebook, user=user).delete()
            invitation.accepted_at, invitation.accepted_by = now, user
            invitation.save(update_fields=["accepted_at", "accepted_by"])
            audit.record(
                "invitation.accepted",
                notebook=invitation.notebook,
                actor=user,
                request=request,
                email=invitation.email,
                role=invitation.role,
            )
        bound += 1
    return bound
