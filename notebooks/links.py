"""Share links: made, revoked and opened here. A token is returned once and stored only as a
hash; a link's use limit is taken atomically; who may make or revoke one is decided by the
checks in `notebooks.access`."""

from __future__ import annotations

import secrets
from datetime import datetime

from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit import log as audit
from config.cache import count_up
from notebooks import access as acl
from notebooks.access import Access, Refused, hash_token, link_is_valid
from notebooks.actions import notify_after_commit
from notebooks.models import LinkJoin, Role, ShareLink

LINK_GUESSES_PER_IP = 20  # wrong tokens per 10 minutes before the IP is refused


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
        raise Refused("The use limit must be at least 1 person.", "bad_max_uses")
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
            **access.audit_actor,
        )
    return link, token


def revoke_link(access: Access, link_id: int, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        link = acl.get_or_refuse(
            ShareLink.objects.select_for_update().filter(notebook=access.notebook), link_id, "link"
        )
        acl.check_may_manage(access, link.created_by_id)
        if link.revoked_at is None:
            link.revoked_at = timezone.now()
            link.save(update_fields=["revoked_at"])
            audit.record(
                "link.revoked",
                notebook=access.notebook,
                request=request,
                link_label=link.label,
                **access.audit_actor,
            )
        notify_after_commit(access.notebook.pk)


def _too_many_guesses(request) -> bool:
    key = f"link-guess:{request.META.get('REMOTE_ADDR')}"
    return cache.get(key, 0) >= LINK_GUESSES_PER_IP


def _count_guess(request) -> None:
    key = f"link-guess:{request.META.get('REMOTE_ADDR')}"
    count_up(key, 1, 600)


def open_link(request, token: str = "", *, token_hash: str = "") -> ShareLink:
    """Join a share link (by its token, or the token's hash kept in the session while its
    holder signs in): a `LinkJoin` for the signed-in user, or for the session's guest key;
    raise Refused with the reason (code "login_required" when signing in would help)."""
    if _too_many_guesses(request):
        raise Refused("Too many invalid links were tried from your address; wait a few minutes.")
    token_hash = token_hash or hash_token(token)
    link = ShareLink.objects.select_related("notebook").filter(token_hash=token_hash).first()
    if link is None:
        _count_guess(request)
        audit.record("access.denied", request=request, actor=request.user, reason="unknown link token")
        raise Refused("This link does not exist.")
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
        raise Refused("This link was revoked or has expired. Ask the owner for a new one.", "link_invalid")
    if acl.link_role(link.notebook, link) is None:
        reason = "This link no longer works: whoever made it lost access. Ask the owner for a new one."
        raise Refused(reason, "link_invalid")
    user = request.user if request.user.is_authenticated else None
    acl.check_not_removed(link.notebook, user)
    if link.require_login and user is None:
        raise Refused("Sign in to open this link.", "login_required")
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
        raise Refused("This link has been used as many times as its owner allowed.", "used_up")


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
