from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ObjectDoesNotExist
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from notebooks import access as acl
from notebooks import sharing
from notebooks.models import Role
from notebooks.people import people_with_access
from notebooks.views.common import get_access
from notebooks.views.requests import invite_addresses

EXPIRY_CHOICES = {
    "": None,
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


PENDING_LINK = "pending_link"  # the token's hash, never the token


def open_link(request, token):
    """The first hop: the token is in this URL only. If signing in is needed, the token's hash
    waits in the session, and the sign-in page comes back to the token-free `/s/`."""
    return _open(request, acl.hash_token(token))


def open_pending_link(request):
    token_hash = request.session.get(PENDING_LINK)
    if not token_hash:
        reason = "There is no link to open. Open the link you were given again."
        return render(request, "notebooks/link_error.html", {"reason": reason}, status=404)
    return _open(request, token_hash)


def _open(request, token_hash: str):
    try:
        link = sharing.open_link(request, token_hash=token_hash)
    except acl.Refused as e:
        if e.code is acl.Rule.LOGIN_REQUIRED:
            request.session[PENDING_LINK] = token_hash
            return redirect_to_login(reverse("open_pending_link"))
        request.session.pop(PENDING_LINK, None)
        return render(request, "notebooks/link_error.html", {"reason": str(e)}, status=404)
    request.session.pop(PENDING_LINK, None)
    return redirect(link.notebook)


@login_required
@require_POST
def leave(request, notebook_id):
    access = get_access(request, notebook_id)
    try:
        sharing.leave(access, request)
    except acl.Refused as e:
        messages.error(request, str(e))
        return redirect(access.notebook)
    messages.success(request, f"You left “{access.notebook.title}”.")
    return redirect("shared_with_me")


@xframe_options_sameorigin  # shown inside the editor's sharing dialog
def share(request, notebook_id):
    access = get_access(request, notebook_id, acl.Action.SHARE)
    embed = request.GET.get("embed") == "1"
    if request.method == "POST":
        try:
            _act(request, access)
        except acl.Refused as e:
            messages.error(request, str(e))
        except ObjectDoesNotExist:
            messages.error(request, "That person, invitation or link is no longer there.")
        except (KeyError, ValueError):  # a form field missing, or not a number or role
            messages.error(request, "That request was not understood; reload the page and try again.")
        if not acl.may_share_now(access.principal, access.notebook):
            return redirect(access.notebook)
        return redirect(f"/n/{notebook_id}/share" + ("?embed=1" if embed else ""))
    notebook = access.notebook
    level, general = sharing.general_access(notebook)
    context = {
        "notebook": notebook,
        "people": people_with_access(notebook),
        "links": _links(access),
        "general_level": level,
        "general_link": general,
        "general_copyable": general is not None and acl.may(acl.check_may_copy_link, access, general),
        "general_readable": general is not None and sharing.token_readable(general),
        "levels": sharing.LEVELS.items(),
        "shown": request.session.pop("shown_link", None),
        "roles": acl.grantable_roles(access),
        "invite_retry": request.session.pop("invite_retry", None),
        "now": timezone.now(),
        "embed": embed,
        "is_owner": access.can(acl.Action.OWN),
        "is_the_owner": access.is_the_owner,
    }
    return render(request, "notebooks/share.html", context)


def _links(access) -> list:
    """Each named link with `effective` (its role as capped by whoever made it; None: dead),
    and whether this person may copy it again or replace it."""
    notebook = access.notebook
    rows = notebook.links.filter(general=False).prefetch_related("joins__user").order_by("-created_at")
    rows = list(rows)
    for row in rows:
        row.effective = acl.link_role(notebook, row)
        row.capped = row.effective is None or row.effective != row.role
        row.readable = sharing.token_readable(row)
        row.copyable = row.readable and acl.may(acl.check_may_copy_link, access, row)
        row.replaceable = acl.may(acl.check_may_manage, access, row.created_by_id)
    return rows


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise acl.Refused(f"“{value[:40]}” is not a role.", acl.Rule.BAD_ROLE) from None


MAX_LINK_USES = 100_000  # and so always within the database's integer column


def _max_uses(value: str) -> int | None:
    if not value:
        return None
    try:
        max_uses = int(value)
    except ValueError:
        raise acl.Refused("The use limit must be a whole number of people.", acl.Rule.BAD_MAX_USES) from None
    if max_uses < 1:
        raise acl.Refused("The use limit must be at least 1 person.", acl.Rule.BAD_MAX_USES)
    if max_uses > MAX_LINK_USES:
        raise acl.Refused(f"The use limit can be at most {MAX_LINK_USES:,} people.", acl.Rule.BAD_MAX_USES)
    return max_uses


def _expiry(value: str) -> timedelta | None:
    if value not in EXPIRY_CHOICES:
        raise acl.Refused(f"“{value[:40]}” is not one of the expiry choices.", acl.Rule.BAD_EXPIRY)
    return EXPIRY_CHOICES[value]


def _act(request, access) -> None:
    post = request.POST
    action = post.get("action")
    role = _role(post.get("role", Role.VIEWER))
    if action == "invite":
        invite_addresses(request, access, role)
    elif action == "create_link":
        expiry = _expiry(post.get("expires", ""))
        max_uses = _max_uses(post.get("max_uses", ""))
        link, token = sharing.create_link(
            access,
            label=post.get("label", ""),
            role=role,
            require_login=post.get("require_login") == "on",
            expires_at=timezone.now() + expiry if expiry else None,
            max_uses=max_uses,
            request=request,
        )
        request.session["shown_link"] = {"id": link.pk, "token": token}
    elif action == "general_access":
        level = post.get("level", "")
        sharing.set_general_access(access, level, role, request)
        messages.success(request, f"General access: {sharing.LEVELS.get(level, level)}.")
    elif action == "copy_link":
        token = sharing.copy_link(access, post.get("link_id"), request)
        request.session["shown_link"] = {"id": int(post["link_id"]), "token": token}
    elif action == "renew_general_link":
        link, token = sharing.renew_general_link(access, request)
        request.session["shown_link"] = {"id": link.pk, "token": token}
        messages.success(request, "General access has a new link; the old one no longer opens.")
    elif action == "replace_link":
        link, token = sharing.replace_link(access, post.get("link_id"), request)
        request.session["shown_link"] = {"id": link.pk, "token": token}
        messages.success(request, "The old link is revoked; here is its replacement.")
    elif action == "revoke_link":
        sharing.revoke_link(access, post.get("link_id"), request)
        messages.success(request, "The link is revoked; people using it were disconnected.")
    elif action == "change_role":
        sharing.change_role(access, post.get("grant_id"), role, request)
    elif action == "remove_person":
        sharing.remove_person(access, post.get("user_id"), request)
        messages.success(request, "Removed; links they joined no longer let them in.")
    elif action == "remove_guest":
        sharing.remove_guest(access, post.get("join_id"), request)
        messages.success(request, "Removed; the link no longer lets that guest in.")
    elif action == "remove_grant":
        sharing.remove_grant(access, post.get("grant_id"), request)
    elif action == "transfer":
        sharing.transfer_ownership(access, post.get("grant_id"), request)
        messages.success(request, "The notebook has a new owner; you keep edit-and-run access.")
    elif action == "settings":
        sharing.set_editors_can_share(access, post.get("editors_can_share") == "on", request)
    elif action == "resend":
        sharing.resend_invitation(access, post.get("invitation_id"), request)
        messages.success(request, "The invitation was sent again.")
    elif action == "withdraw":
        sharing.withdraw_invitation(access, post.get("invitation_id"), request)
    else:
        raise acl.Refused("Unknown sharing action.", acl.Rule.INVALID)
