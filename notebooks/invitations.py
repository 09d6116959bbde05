"""Email invitations: existing users with a verified address get a grant at once, everyone
else a pending invitation that becomes a grant when that address is verified. Who may invite
whom, with which role, is decided in `notebooks.access`. Every change is audited in the same
transaction."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from audit import log as audit
from config.cache import take
from notebooks import access as acl
from notebooks import emails as mail
from notebooks.access import Access, Refused, Rule, hash_token
from notebooks.actions import notify_after_commit
from notebooks.models import Grant, Invitation, Removal, Role

INVITATION_DAYS = 14
INVITATIONS_PER_HOUR = 200  # a class roster fits; a spam run does not


def invite(access: Access, emails: list[str], role: Role, request=None, message: str = "") -> list[str]:
    """Give existing users the role at once; send everyone else a pending invitation."""
    message = mail.clean_message(message)
    acl.check_may_share(access)
    acl.check_role_within_own(access, role)
    emails = list(dict.fromkeys(e.strip().lower() for e in emails if e.strip()))
    invalid = [e for e in emails if not _valid_email(e)]
    if invalid:
        raise Refused(f"Not an email address: {', '.join(invalid[:5])}. Nobody was invited.", Rule.BAD_EMAIL)
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
    if not take(f"invites:{access.principal.key}", count, INVITATIONS_PER_HOUR):
        reason = f"You can send at most {INVITATIONS_PER_HOUR} invitations an hour; try again later."
        raise Refused(reason, Rule.RATE_LIMITED)


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
        if not acl.invitation_may_bind(invitation, user):
            continue
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
            if not created and Role.highest(invitation.role, grant.role) != grant.role:
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


def invitation_by_hash(token_hash: str) -> Invitation | None:
    """The invitation with this token hash if it was not withdrawn and has not expired
    (accepted ones too: the caller tells whose)."""
    return (
        Invitation.objects.select_related("notebook")
        .filter(
            token_hash=token_hash,
            withdrawn_at__isnull=True,
            expires_at__gt=timezone.now(),
            notebook__deleted_at__isnull=True,
        )
        .first()
    )
