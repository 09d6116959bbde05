"""Share links: made, revoked, copied again, replaced and opened here, and the notebook's
general access (its one `general` link). A token is looked up by its hash and kept encrypted
with a key derived from SECRET_KEY, so whoever may copy it gets it again; a link's use limit is
taken atomically; who may do what is decided by the checks in `notebooks.access`."""

from __future__ import annotations

import secrets
import time
from datetime import datetime

from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit import log as audit
from audit.models import AuditEvent
from config.cache import give_back, take
from notebooks import access as acl
from notebooks import crypto
from notebooks.access import Access, Refused, Rule, hash_token
from notebooks.actions import notify_after_commit
from notebooks.models import LinkJoin, Notebook, Role, ShareLink

LINK_GUESSES_PER_IP = 20  # wrong tokens per 10 minutes before the IP is refused
# How long an open waits for other opens from its address whose lookups are under way (a class
# behind one address, all at once) before it is refused.
LINK_GUESS_WAIT = 2.0
KEY_PURPOSE = "share-link"  # the key the tokens are encrypted with is derived for this only

# General access: who the notebook's general link lets in (restricted: nobody).
RESTRICTED, SIGNED_IN, ANYONE = "restricted", "signed_in", "anyone"
LEVELS = {
    RESTRICTED: "Restricted: only people with access",
    SIGNED_IN: "Anyone signed in with the link",
    ANYONE: "Anyone with the link",
}


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
        raise Refused("The use limit must be at least 1 person.", Rule.BAD_MAX_USES)
    token = secrets.token_urlsafe(24)  # 192 random bits
    with transaction.atomic():
        link = ShareLink.objects.create(
            notebook=access.notebook,
            token_hash=hash_token(token),
            token_encrypted=crypto.encrypt(token, KEY_PURPOSE),
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


def _lock_notebook_first(notebook: Notebook) -> None:
    """Take the notebook's row before a link's, in the order a room's batch write takes them
    (`updatelog.append` numbers its rows in the notebook's, then inserts them, each referring to
    the link its guest came through) and `set_general_access` does. The change counts up the
    notebook's `access_version` at its end (`notify_after_commit`): with the link's row taken
    first, a guest's edit written meanwhile waited for the link while the change waited for the
    notebook, and PostgreSQL broke the deadlock after 1 s by failing one of them (the room's
    write, retried; or the revocation itself). On SQLite, where one write runs at a time, this
    is no lock."""
    Notebook.objects.select_for_update(no_key=True).filter(pk=notebook.pk).exists()


def revoke_link(access: Access, link_id: int, request=None) -> None:
    acl.check_may_share(access)
    with transaction.atomic():
        _lock_notebook_first(access.notebook)
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


def copy_link(access: Access, link_id, request=None) -> str:
    """A live link's token again, for an owner or the link's maker; audited."""
    link = acl.get_or_refuse(ShareLink.objects.usable().filter(notebook=access.notebook), link_id, "link")
    acl.check_may_copy_link(access, link)
    way_out = "use “New link” under General access" if link.general else "replace it"
    if not link.token_encrypted:
        reason = f"This link was made before links could be copied again; {way_out} to get one you can copy."
        raise Refused(reason, Rule.NOT_COPYABLE)
    try:
        token = crypto.decrypt(link.token_encrypted, KEY_PURPOSE)
    except crypto.TokenUnreadable:
        reason = f"This link's stored copy cannot be read (the server's secret key changed); {way_out}."
        raise Refused(reason, Rule.NOT_COPYABLE) from None
    audit.record(
        "link.copied", notebook=access.notebook, request=request, link_label=link.label, **access.audit_actor
    )
    return token


def token_readable(link: ShareLink) -> bool:
    """Can this link's token be copied again (stored, and readable with the server's keys)?"""
    try:
        return bool(link.token_encrypted) and bool(crypto.decrypt(link.token_encrypted, KEY_PURPOSE))
    except crypto.TokenUnreadable:
        return False


def replace_link(access: Access, link_id, request=None) -> tuple[ShareLink, str]:
    """Revoke a link and make a new one like it (label, role, sign-in, expiry, limit), e.g. an
    old link that cannot be copied. People who joined the old one keep no access through it."""
    old = acl.get_or_refuse(
        ShareLink.objects.filter(notebook=access.notebook, general=False), link_id, "link"
    )
    acl.check_may_manage(access, old.created_by_id)
    revoke_link(access, old.pk, request)
    return create_link(
        access,
        label=old.label,
        role=Role(old.role),
        require_login=old.require_login,
        expires_at=old.expires_at,
        max_uses=old.max_uses,
        request=request,
    )


def general_access(notebook) -> tuple[str, ShareLink | None]:
    """The notebook's general access level and its live general link (None: restricted). A
    general link whose changer lost access lets nobody in, so it reads as restricted."""
    link = ShareLink.objects.usable().filter(notebook=notebook, general=True).first()
    if link is None or acl.link_role(notebook, link) is None:
        return RESTRICTED, None
    return (SIGNED_IN if link.require_login else ANYONE), link


def set_general_access(access: Access, level: str, role: Role | None, request=None) -> None:
    """Restricted, anyone signed in with the link, or anyone with the link, with a role. The
    general link keeps its token (its URL) across changes; restricted revokes it. Audited, and
    every live socket is re-checked, so a guest who loses access or a role sees it at once."""
    if level not in LEVELS:
        raise Refused(f"“{str(level)[:40]}” is not a general access choice.", Rule.BAD_ACCESS_LEVEL)
    acl.check_general_access(access, level, None if level == RESTRICTED else role)
    now = timezone.now()
    with transaction.atomic():
        # The notebook's row is the lock: with no general link yet there is no row to lock, and
        # two first saves at once would both insert one.
        Notebook.objects.select_for_update().filter(pk=access.notebook.pk).exists()
        link = ShareLink.objects.select_for_update().filter(notebook=access.notebook, general=True).first()
        if level == RESTRICTED:
            if link is not None and link.revoked_at is None:
                link.revoked_at = now
                link.save(update_fields=["revoked_at"])
        else:
            if link is None:
                token = secrets.token_urlsafe(24)
                link = ShareLink(
                    notebook=access.notebook,
                    general=True,
                    token_hash=hash_token(token),
                    token_encrypted=crypto.encrypt(token, KEY_PURPOSE),
                )
            link.label = LEVELS[level].split(":")[0]
            link.role, link.require_login = role, level == SIGNED_IN
            link.revoked_at, link.expires_at, link.max_uses = None, None, None
            link.created_by = access.principal.user  # capped by the changer's own role
            link.save()
        audit.record(
            "access.general_changed",
            notebook=access.notebook,
            request=request,
            level=level,
            role=role.value if role is not None and level != RESTRICTED else "",
            **access.audit_actor,
        )
        notify_after_commit(access.notebook.pk)


def renew_general_link(access: Access, request=None) -> tuple[ShareLink, str]:
    """A new URL for general access (same level and role), for when the old one went where it
    should not: the old URL stops opening, and people who joined through it keep no access
    through it (they open the new one). For an owner or whoever last set general access."""
    acl.check_may_share(access)
    with transaction.atomic():
        _lock_notebook_first(access.notebook)
        link = ShareLink.objects.usable().select_for_update().filter(notebook=access.notebook, general=True)
        link = link.first()
        if link is None:
            raise Refused("General access is restricted: there is no link to renew.", Rule.NOT_FOUND)
        acl.check_may_manage(access, link.created_by_id)
        token = secrets.token_urlsafe(24)
        link.token_hash, link.token_encrypted = hash_token(token), crypto.encrypt(token, KEY_PURPOSE)
        link.use_count = 0
        link.save(update_fields=["token_hash", "token_encrypted", "use_count"])
        LinkJoin.objects.filter(link=link).delete()
        audit.record(
            "link.renewed",
            notebook=access.notebook,
            request=request,
            link_label=link.label,
            **access.audit_actor,
        )
        notify_after_commit(access.notebook.pk)
    return link, token


def _guess_key(request) -> str:
    return f"link-guess:{request.META.get('REMOTE_ADDR')}"


def _wrong_key(request) -> str:
    return f"link-wrong:{request.META.get('REMOTE_ADDR')}"


def _take_a_guess(request) -> bool:
    """Take a guess for this attempt. The count holds the address's wrong guesses and its
    lookups under way; at the limit, an address whose wrong guesses alone do not reach it waits
    (at most LINK_GUESS_WAIT) for those lookups to end: they are mostly people opening a real
    link, who give their guess back. Nothing is looked up without a guess taken, so no more than
    the limit of wrong tokens are ever tried."""
    deadline = time.monotonic() + LINK_GUESS_WAIT
    while not take(_guess_key(request), 1, LINK_GUESSES_PER_IP, 600):
        if cache.get(_wrong_key(request), 0) >= LINK_GUESSES_PER_IP or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def open_link(request, token: str = "", *, token_hash: str = "") -> ShareLink:
    """Join a share link (by its token, or the token's hash kept in the session while its
    holder signs in): a `LinkJoin` for the signed-in user, or for the session's guest key;
    raise Refused with the reason (code "login_required" when signing in would help)."""
    # Every attempt takes a guess first (so that many at once cannot all pass a count of the
    # guesses before them); one that finds a link gives it back: only unknown tokens count.
    if not _take_a_guess(request):
        reason = "Too many invalid links were tried from your address; wait a few minutes."
        raise Refused(reason, Rule.RATE_LIMITED)
    token_hash = token_hash or hash_token(token)
    link = ShareLink.objects.with_validity().select_related("notebook").filter(token_hash=token_hash).first()
    if link is not None:
        give_back(_guess_key(request))
    else:
        take(_wrong_key(request), 1, 2**31, 600)  # counted (atomically, with its expiry), never refused
        audit.record("access.denied", request=request, actor=request.user, reason="unknown link token")
        raise Refused("This link does not exist.", Rule.LINK_UNKNOWN)
    user = request.user if request.user.is_authenticated else None
    try:
        acl.check_link_joinable(link, user, "" if user else request.session.get("guest_key", ""))
    except Refused as e:
        if e.code is Rule.LINK_INVALID:
            note_if_expired(link, request)
            audit.record(
                "access.denied",
                notebook=link.notebook,
                request=request,
                actor=request.user,
                reason="link revoked, expired or its maker lost access",
                link_label=link.label,
            )
        raise
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
        raise Refused("This link has been used as many times as its owner allowed.", Rule.USED_UP)


def note_if_expired(link: ShareLink, request=None) -> None:
    """Record `link.expired` once, when an expired link is first noticed."""
    expired = ShareLink.objects.expired().filter(pk=link.pk).exists()
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
