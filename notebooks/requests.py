"""Access requests: someone without the access they need asks for a role; whoever may share at
that role approves (through the same code path as sharing, so its ceilings and its rule that
grants need a verified address apply) or declines. Every step is audited."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit import log as audit
from config.cache import take
from notebooks import access as acl
from notebooks import emails
from notebooks.access import Access, Principal, Refused, Rule
from notebooks.models import AccessRequest, Grant, Notebook, Role

REQUESTS_PER_HOUR = 20  # per person, over all notebooks
EMAIL_EVERY_SECONDS = 600  # asking again within this updates the request without mailing again
REQUESTABLE = acl.REQUESTABLE_ROLES


def parse_role(value: str | None) -> Role:
    if not value:
        raise Refused("Choose the access you ask for: view, edit, or edit and run.", "bad_role")
    try:
        role = Role(value or "")
    except ValueError:
        raise Refused(f"“{str(value)[:40]}” is not a role you can ask for.", Rule.BAD_ROLE) from None
    if role not in REQUESTABLE:
        raise Refused("You can ask to view, edit, or edit and run.", Rule.BAD_ROLE)
    return role


def ask(principal: Principal, notebook: Notebook, role: Role, message: str, request=None) -> AccessRequest:
    """File (or update) the principal's one request on this notebook and tell the approvers."""
    acl.check_may_request(principal, notebook, role)
    message = emails.clean_message(message)
    user = principal.user
    _check_rate(user)
    with transaction.atomic():
        existing = AccessRequest.objects.select_for_update().filter(notebook=notebook, user=user).first()
        # asked (or declined) a moment ago: update the request, mail nobody again; a decline
        # does not open the way to asking (and mailing) again at once
        recently = (
            existing is not None
            and existing.status != AccessRequest.Status.APPROVED
            and (
                timezone.now() - max(existing.updated_at, existing.decided_at or existing.updated_at)
            ).total_seconds()
            < EMAIL_EVERY_SECONDS
        )
        req, _ = AccessRequest.objects.update_or_create(
            notebook=notebook,
            user=user,
            defaults={
                "role": role,
                "message": message,
                "status": AccessRequest.Status.PENDING,
                "updated_at": timezone.now(),
                "decided_by": None,
                "decided_at": None,
            },
        )
        removed = acl.is_removed(notebook, user)
        audit.record(
            "access.requested",
            notebook=notebook,
            actor=user,
            request=request,
            role=role.value,
            removed=removed,
            message=message[:200],
        )
        if not recently:
            emails.access_requested(req, approver_emails(notebook, user, role), removed, request)
    return req


def _check_rate(user) -> None:
    if not take(f"access-requests:{user.pk}", 1, REQUESTS_PER_HOUR):
        raise Refused(
            f"You can ask for access at most {REQUESTS_PER_HOUR} times an hour; try again later.",
            Rule.RATE_LIMITED,
        )


def approver_emails(notebook: Notebook, requester, role: Role) -> list[str]:
    """The owner, and everyone with a grant who may approve this request."""
    emails_ = [notebook.owner.email]
    for grant in Grant.objects.filter(notebook=notebook).exclude(user=requester).select_related("user"):
        effective = acl.grant_role(notebook, grant)
        if effective is None:
            continue
        access = Access(notebook, Principal(user=grant.user), effective, grant.via)
        if acl.may_approve_request(access, requester, role):
            emails_.append(grant.user.email)
    return list(dict.fromkeys(emails_))


def pending(access: Access) -> list[AccessRequest]:
    """The pending requests this person may decide, each with `removed` and `roles` (the ones
    they may give, at most their own)."""
    rows = list(
        AccessRequest.objects.filter(notebook=access.notebook, status=AccessRequest.Status.PENDING)
        .select_related("user")
        .order_by("-updated_at")
    )
    shown = []
    for row in rows:
        if not acl.may_approve_request(access, row.user, Role.VIEWER):
            continue
        row.removed = acl.is_removed(access.notebook, row.user)
        row.current = acl.resolve(Principal(user=row.user), access.notebook)
        row.roles = acl.roles_to_approve(access, row.current)
        row.default_role = row.role if Role(row.role) in row.roles else (row.roles or [Role.VIEWER])[-1].value
        shown.append(row)
    return shown


def _pending_row(access: Access, request_id) -> AccessRequest:
    """Locked until the decision commits: a second approver waits, then finds it decided."""
    queryset = (
        AccessRequest.objects.select_related("user")
        .select_for_update(of=("self",))
        .filter(notebook=access.notebook, status=AccessRequest.Status.PENDING)
    )
    return acl.get_or_refuse(queryset, request_id, "pending access request")


def approve(access: Access, request_id, role: Role, request=None) -> AccessRequest:
    """Give the role exactly as sharing with the requester's address would."""
    from notebooks import sharing

    acl.check_may_share(access)
    acl.check_role_within_own(access, role)
    if role not in REQUESTABLE:
        raise Refused("Approve as viewer, editor, or editor who may run.", Rule.BAD_ROLE)
    with transaction.atomic():
        req = _pending_row(access, request_id)
        if not acl.may_approve_request(access, req.user, role):
            raise Refused("Only an owner can give this person that access.", Rule.OWNER_ONLY)
        current = acl.resolve(Principal(user=req.user), access.notebook)
        acl.check_approval_raises(current, role, req.user.name)
        sharing.invite(access, [req.user.email], role, request)
        _decide(access, req, AccessRequest.Status.APPROVED, request, role=role.value, asked=req.role)
    return req


def decline(access: Access, request_id, request=None) -> AccessRequest:
    acl.check_may_share(access)
    with transaction.atomic():
        req = _pending_row(access, request_id)
        if not acl.may_approve_request(access, req.user, Role.VIEWER):
            raise Refused("Only an owner can decide this request.", Rule.OWNER_ONLY)
        _decide(access, req, AccessRequest.Status.DECLINED, request, asked=req.role)
    return req


def _decide(access: Access, req: AccessRequest, status: str, request, **details) -> None:
    req.status, req.decided_by, req.decided_at = status, access.principal.user, timezone.now()
    req.save(update_fields=["status", "decided_by", "decided_at"])
    audit.record(
        f"access.{status}",
        notebook=access.notebook,
        request=request,
        email=req.user.email,
        **details,
        **access.audit_actor,
    )


def my_request(principal: Principal, notebook: Notebook) -> AccessRequest | None:
    if principal.user is None:
        return None
    return AccessRequest.objects.filter(notebook=notebook, user=principal.user).first()
