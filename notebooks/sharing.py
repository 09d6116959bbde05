"""Sharing: grants, email invitations and share links. Every change is audited in the same
transaction and, once committed, re-checked on every live socket of the notebook."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit import log as audit
from notebooks import access as acl
from notebooks.access import Access, Refused, hash_token, link_is_valid
from notebooks.actions import notify_after_commit
from notebooks.models import Grant, Invitation, LinkJoin, Removal, Role, ShareLink

INVITATION_DAYS = 14
LINK_GUESSES_PER_IP = 20  # wrong tokens per 10 minutes before the IP is refused
INVITATIONS_PER_HOUR = 200  # a class roster fits; a spam run does not


class ShareError(Refused):
    """A sharing request that cannot be done; the message says why, the code which rule."""


def _get(queryset, pk, what: str):
    """One row of this notebook by id, or a ShareError naming what was not found."""
    try:
        return queryset.get(pk=int(str(pk)))
    except (TypeError, ValueError):
        raise ShareError(f"“{str(pk)[:40]}” is not a valid {what} id.", "bad_id") from None
    except queryset.model.DoesNotExist:
        raise ShareError(f"There is no such {what} on this notebook.", "not_found") from None


def _actor(access: Access) -> dict:
    return {"actor": access.principal.user, "link": access.link, "label": access.actor_label}


# share links


def create_link(
    access: Access,
    *,
    label: str,
    role: Role,
    require_login: bool = True,
    expires_at: datetime | None = None,
    max_uses: int | None = None,
    request=None,
) -> tuple[ShareLink, str]:
    """A new link; the token is returned once and only its hash is stored."""
    acl.check_may_share(access)
    acl.check_link_role(access, role)
    if max_uses is not None and max_uses < 1:
        raise ShareError("The use limit must be at least 1 person.", "bad_max_uses")
    token = secrets.token_urlsafe(24)  # 192 random bits
    with transaction.atomic():
        link = ShareLink.objects.create(
            notebook=access.notebook,
            token_hash=hash_token(token),
            label=label.strip()[:80] or "Link",
            role=role,
            require_login=require_login,
            expires_at=expires_at,
            max_uses=max_uses,
            created_by=access.principal.user,
        )
        audit.record(
            "link.created",
            notebook=access.notebook,
            request=request,
            link_label=link.label,
            role=role.value,
            require_login=require_login,
            **_actor(access),
        )
    return link, token


def revoke_link(access: Access, link_id: int, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        link = _get(ShareLink.objects.select_for_update().filter(notebook=access.notebook), link_id, "link")
        acl.check_may_manage(access, link.created_by_id)
        if link.revoked_at is None:
            link.revoked_at = timezone.now()
            link.save(update_fields=["revoked_at"])
            audit.record(
                "link.revoked",
                notebook=access.notebook,
                request=request,
                link_label=link.label,
                **_actor(access),
            )
        notify_after_commit(access.notebook.pk)


def _too_many_guesses(request) -> bool:
    key = f"link-guess:{request.META.get('REMOTE_ADDR')}"
    return cache.get(key, 0) >= LINK_GUESSES_PER_IP


def _count_guess(request) -> None:
    key = f"link-guess:{request.META.get('REMOTE_ADDR')}"
    cache.add(key, 0, 600)
    cache.incr(key)


def open_link(request, token: str = "", *, token_hash: str = "") -> ShareLink:
    """Join a share link (by its token, or the token's hash kept in the session while its
    holder signs in): a `LinkJoin` for the signed-in user, or for the session's guest key;
    raise ShareError with the reason (code "login_required" when signing in would help)."""
    if _too_many_guesses(request):
        raise ShareError("Too many invalid links were tried from your address; wait a few minutes.")
    token_hash = token_hash or hash_token(token)
    link = ShareLink.objects.select_related("notebook").filter(token_hash=token_hash).first()
    if link is None:
        _count_guess(request)
        audit.record("access.denied", request=request, actor=request.user, reason="unknown link token")
        raise ShareError("This link does not exist.")
    if not link_is_valid(link) or link.notebook.in_trash:
        note_if_expired(link, request)
        audit.record(
            "access.denied",
            notebook=link.notebook,
            request=request,
            actor=request.user,
            reason="link revoked or expired",
            link_label=link.label,
        )
        raise ShareError("This link was revoked or has expired. Ask the owner for a new one.", "link_invalid")
    if acl.link_role(link.notebook, link) is None:
        reason = "This link no longer works: whoever made it lost access. Ask the owner for a new one."
        raise ShareError(reason, "link_invalid")
    user = request.user if request.user.is_authenticated else None
    acl.check_not_removed(link.notebook, user)
    if link.require_login and user is None:
        raise ShareError("Sign in to open this link.", "login_required")
    if not request.session.get("guest_key") and user is None:
        request.session["guest_key"] = secrets.token_hex(8)
    guest_key = "" if user else request.session["guest_key"]
    with transaction.atomic():
        join = LinkJoin.objects.filter(link=link, user=user, guest_key=guest_key).first()
        if join is None:
            _take_a_use(link)
            LinkJoin.objects.create(link=link, user=user, guest_key=guest_key)
            audit.record(
                "link.used", notebook=link.notebook, request=request, actor=user, link=link, role=link.role
            )
        else:
            join.save(update_fields=["last_seen_at"])
    return link


def _take_a_use(link: ShareLink) -> None:
    """Count one more person in, in one conditional UPDATE: the row lock it takes (PostgreSQL)
    or the write transaction (SQLite, immediate mode) makes concurrent opens on any worker
    queue, and each re-reads the count, so a limit of N admits exactly N."""
    room = Q(max_uses__isnull=True) | Q(use_count__lt=F("max_uses"))
    if not ShareLink.objects.filter(room, pk=link.pk).update(use_count=F("use_count") + 1):
        raise ShareError("This link has been used as many times as its owner allowed.", "used_up")


def note_if_expired(link: ShareLink, request=None) -> None:
    """Record `link.expired` once, when an expired link is first noticed."""
    from audit.models import AuditEvent

    expired = link.revoked_at is None and link.expires_at is not None and link.expires_at <= timezone.now()
    if expired and not AuditEvent.objects.filter(action="link.expired", link_id=link.pk).exists():
        audit.record(
            "link.expired",
            notebook=link.notebook,
            link=link,
            request=request,
            label=f"Link {link.label}",
            link_label=link.label,
            expired_at=link.expires_at.isoformat(),
        )


# grants and invitations


def invite(access: Access, emails: list[str], role: Role, request=None) -> list[str]:
    """Give existing users the role at once; send everyone else a pending invitation."""
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
                    **_actor(access),
                )
                notify_after_commit(access.notebook.pk)
                _mail(
                    email,
                    f"{access.actor_label} shared “{access.notebook.title}” with you",
                    f"Open it: {settings.SITE_URL}{access.notebook.get_absolute_url()}",
                )
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
                    **_actor(access),
                )
                _mail(
                    email,
                    f"{access.actor_label} invited you to “{access.notebook.title}”",
                    f"Create your account with this address to open it: {settings.SITE_URL}/accounts/signup/"
                    f"\n\nThe invitation expires in {INVITATION_DAYS} days.",
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


def _mail(to: str, subject: str, body: str) -> None:
    transaction.on_commit(lambda: send_mail(subject, body, None, [to], fail_silently=True))


def change_role(access: Access, grant_id: int, role: Role, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        grant = _get(_grants(access), grant_id, "person")
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
            **_actor(access),
        )
        notify_after_commit(access.notebook.pk)


def _grants(access: Access):
    return Grant.objects.select_related("user").filter(notebook=access.notebook)


def remove_grant(access: Access, grant_id: int, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        grant = _get(_grants(access), grant_id, "person")
        acl.check_may_change_grant(access, grant)
        grant.delete()
        if grant.user_id != access.principal.user.pk:
            _close_other_paths(access, grant.user)
        audit.record(
            "grant.removed",
            notebook=access.notebook,
            request=request,
            email=grant.user.email,
            **_actor(access),
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
    acl.check_may_manage(access, _get(pending, invitation_id, "invitation").invited_by_id)
    _check_send_rate(access, 1)
    with transaction.atomic():
        invitation = _get(pending, invitation_id, "invitation")
        invitation.sent_at = timezone.now()
        invitation.expires_at = timezone.now() + timedelta(days=INVITATION_DAYS)
        invitation.save(update_fields=["sent_at", "expires_at"])
        audit.record(
            "invitation.sent",
            notebook=access.notebook,
            request=request,
            email=invitation.email,
            role=invitation.role,
            resent=True,
            **_actor(access),
        )
        _mail(
            invitation.email,
            f"Reminder: {access.actor_label} invited you to “{access.notebook.title}”",
            f"Create your account with this address to open it: {settings.SITE_URL}/accounts/signup/",
        )


def _check_send_rate(access: Access, count: int) -> None:
    """At most INVITATIONS_PER_HOUR emails per person per hour."""
    key = f"invites:{access.principal.key}"
    cache.add(key, 0, 3600)
    if cache.get(key, 0) + count > INVITATIONS_PER_HOUR:
        raise ShareError(f"You can send at most {INVITATIONS_PER_HOUR} invitations an hour; try again later.")
    cache.incr(key, count)


def withdraw_invitation(access: Access, invitation_id: int, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        invitation = _get(Invitation.objects.filter(notebook=access.notebook), invitation_id, "invitation")
        acl.check_may_manage(access, invitation.invited_by_id)
        invitation.withdrawn_at = timezone.now()
        invitation.save(update_fields=["withdrawn_at"])
        audit.record(
            "invitation.withdrawn",
            notebook=access.notebook,
            request=request,
            email=invitation.email,
            **_actor(access),
        )


def transfer_ownership(access: Access, grant_id: int, request=None) -> None:
    """Make someone who already has access the owner; the former owner keeps edit-and-run."""
    acl.check_may_transfer(access)
    notebook = access.notebook
    with transaction.atomic():
        grant = _get(Grant.objects.select_related("user").filter(notebook=notebook), grant_id, "person")
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
            "notebook.transferred", notebook=notebook, request=request, to=new_owner.email, **_actor(access)
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
            **_actor(access),
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
