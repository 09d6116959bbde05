"""Asking for access, deciding requests, and opening an emailed invitation."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from allauth.account.models import EmailAddress
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from notebooks import access as acl
from notebooks import emails, sharing
from notebooks import requests as access_requests
from notebooks.models import Invitation, Notebook
from notebooks.refusals import Rule
from notebooks.views.common import get_access, principal, wants_json

STATUS_FOR_CODE = {Rule.LOGIN_REQUIRED: 401, Rule.RATE_LIMITED: 429}


@require_POST
def request_access(request, notebook_id):
    """File the signed-in person's request (the 403 page's form, or the editor's button)."""
    notebook = Notebook.objects.alive().select_related("owner").filter(pk=notebook_id).first()
    if notebook is None:
        raise Http404("This notebook does not exist or was deleted.")
    if not request.user.is_authenticated and not wants_json(request):
        return redirect_to_login(notebook.get_absolute_url())
    try:
        role = access_requests.parse_role(request.POST.get("role"))
        req = access_requests.ask(
            principal(request), notebook, role, request.POST.get("message", ""), request
        )
    except acl.Refused as e:
        if wants_json(request):
            return JsonResponse({"error": str(e), "code": e.code}, status=STATUS_FOR_CODE.get(e.code, 400))
        messages.error(request, str(e))
        return redirect(notebook)
    done = f"Your request for “{req.get_role_display().lower()}” was sent to the people who can share it."
    if wants_json(request):
        return JsonResponse({"ok": True, "role": req.role, "message": done})
    messages.success(request, done)
    return redirect(notebook)


@require_POST
def decide(request, notebook_id, request_id):
    """Approve (with a role) or decline a pending request, from the share page."""
    access = get_access(request, notebook_id, acl.Action.SHARE)
    try:
        if request.POST.get("decision") == "approve":
            role = access_requests.parse_role(request.POST.get("role"))
            req = access_requests.approve(access, request_id, role, request)
            messages.success(request, f"{req.user.name} now has “{role.label.lower()}” access.")
        elif request.POST.get("decision") == "decline":
            req = access_requests.decline(access, request_id, request)
            messages.success(request, f"Declined the request of {req.user.name}.")
        else:
            raise acl.Refused("Choose approve or decline.", Rule.BAD_DECISION)
    except acl.Refused as e:
        messages.error(request, str(e))
    embed = "?embed=1" if request.POST.get("embed") == "1" else ""
    return redirect(f"/n/{access.notebook.pk}/share{embed}#access-requests")


PENDING_INVITATION = "pending_invitation"  # the token's hash, never the token


def open_invitation(request, token):
    """The emailed link's first hop: the token is in this URL only; its hash waits in the
    session while the person signs up or logs in, and comes back to the token-free `/invite/`."""
    request.session[PENDING_INVITATION] = acl.hash_token(token)
    return redirect("open_pending_invitation")


def open_pending_invitation(request):
    invitation = _pending_invitation(request)
    if invitation is not None and invitation.accepted_at is not None:
        request.session.pop(PENDING_INVITATION, None)
        if request.user.is_authenticated and invitation.accepted_by_id == request.user.pk:
            return redirect(invitation.notebook)  # signing up through the link accepted it
        invitation = None
    if invitation is None:
        reason = "This invitation was withdrawn, has expired or was already used. Ask the person who sent it."
        return render(request, "notebooks/link_error.html", {"reason": reason}, status=404)
    if not request.user.is_authenticated:
        # the link proves the address: signing up with it needs no second confirmation
        get_adapter(request).stash_verified_email(request, invitation.email)
        if EmailAddress.objects.filter(email__iexact=invitation.email).exists():
            return redirect_to_login(reverse("open_pending_invitation"))
        return redirect(f"{reverse('account_signup')}?next={reverse('open_pending_invitation')}")
    request.session.pop(PENDING_INVITATION, None)
    mine = EmailAddress.objects.filter(user=request.user, email__iexact=invitation.email)
    if mine.exists():
        mine.update(verified=True)
        sharing.bind_invitations(request.user, request=request)
    return redirect(invitation.notebook)


def _pending_invitation(request) -> Invitation | None:
    """The invitation whose hash the session holds, if it was not withdrawn and has not
    expired (accepted ones too: the caller tells whose)."""
    token_hash = request.session.get(PENDING_INVITATION)
    if not token_hash:
        return None
    return sharing.invitation_by_hash(token_hash)


def invite_addresses(request, access, role) -> None:
    """The share page's invite form: the valid addresses are invited; addresses that are not
    addresses are named and put back into the form (with the message) for correcting."""
    text, message = request.POST.get("emails", ""), request.POST.get("message", "")
    valid, invalid = emails.split_addresses(text)
    if len(valid) + len(invalid) > emails.MAX_ADDRESSES:
        raise acl.Refused(f"Invite at most {emails.MAX_ADDRESSES} addresses at a time.", Rule.TOO_MANY)
    if not valid and not invalid:
        raise acl.Refused("Type at least one email address.", Rule.NO_ADDRESS)
    try:
        done = sharing.invite(access, valid, role, request, message=message) if valid else []
    except acl.Refused:
        request.session["invite_retry"] = {"emails": text[:20_000], "message": message[:2000]}
        raise
    if done:
        messages.success(request, f"Shared with {len(done)} address(es).")
    if invalid:
        request.session["invite_retry"] = {"emails": "\n".join(invalid), "message": message[:2000]}
        named = ", ".join(f"“{a[:80]}”" for a in invalid[:5]) + (" ..." if len(invalid) > 5 else "")
        others = " The others were invited." if done else ""
        messages.error(request, f"Not an email address: {named}. Correct it and invite again.{others}")
