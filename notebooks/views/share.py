from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from notebooks import access as acl
from notebooks import sharing
from notebooks.models import Notebook, Role
from notebooks.sharing import ShareError
from notebooks.views.common import get_access

EXPIRY_CHOICES = {
    "": None,
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


def open_link(request, token):
    try:
        link = sharing.open_link(request, token)
    except ShareError as e:
        if "sign in" in str(e).lower():
            return redirect(f"/accounts/login/?next=/s/{token}")
        return render(request, "notebooks/link_error.html", {"reason": str(e)}, status=404)
    return redirect(link.notebook)


@login_required
@require_POST
def leave(request, notebook_id):
    notebook = get_object_or_404(Notebook.objects.alive(), pk=notebook_id)
    try:
        sharing.leave(request.user, notebook, request)
    except ShareError as e:
        messages.error(request, str(e))
        return redirect(notebook)
    messages.success(request, f"You left “{notebook.title}”.")
    return redirect("shared_with_me")


@xframe_options_sameorigin  # shown inside the editor's sharing dialog
def share(request, notebook_id):
    access = get_access(request, notebook_id, acl.Action.SHARE)
    embed = request.GET.get("embed") == "1"
    if request.method == "POST":
        try:
            _act(request, access)
        except ShareError as e:
            messages.error(request, str(e))
        except ObjectDoesNotExist:
            messages.error(request, "That person, invitation or link is no longer there.")
        except (KeyError, ValueError):  # a form field missing, or not a number or role
            messages.error(request, "That request was not understood; reload the page and try again.")
        if access.notebook.owner_id != request.user.pk and not access.can(acl.Action.SHARE):
            return redirect(access.notebook)
        return redirect(f"/n/{notebook_id}/share" + ("?embed=1" if embed else ""))
    notebook = access.notebook
    context = {
        "notebook": notebook,
        "grants": notebook.grants.select_related("user").order_by("user__email"),
        "invitations": notebook.invitations.filter(accepted_at__isnull=True, withdrawn_at__isnull=True),
        "links": notebook.links.prefetch_related("joins__user").order_by("-created_at"),
        "roles": [r for r in Role if r is not Role.OWNER],
        "new_token": request.session.pop("new_link_token", None),
        "now": timezone.now(),
        "embed": embed,
        "is_owner": access.can(acl.Action.OWN),
    }
    return render(request, "notebooks/share.html", context)


def _act(request, access) -> None:
    post = request.POST
    action = post.get("action")
    role = Role(post.get("role", Role.VIEWER))
    if action == "invite":
        emails = post.get("emails", "").replace(",", "\n").replace(";", "\n").split()
        done = sharing.invite(access, emails, role, request)
        messages.success(request, f"Shared with {len(done)} address(es).")
    elif action == "create_link":
        expiry = EXPIRY_CHOICES.get(post.get("expires", ""))
        max_uses = int(post["max_uses"]) if post.get("max_uses") else None
        _, token = sharing.create_link(
            access,
            label=post.get("label", ""),
            role=role,
            require_login=post.get("require_login") == "on",
            expires_at=timezone.now() + expiry if expiry else None,
            max_uses=max_uses,
            request=request,
        )
        request.session["new_link_token"] = token
    elif action == "revoke_link":
        sharing.revoke_link(access, int(post["link_id"]), request)
        messages.success(request, "The link is revoked; people using it were disconnected.")
    elif action == "change_role":
        sharing.change_role(access, int(post["grant_id"]), role, request)
    elif action == "remove_grant":
        sharing.remove_grant(access, int(post["grant_id"]), request)
    elif action == "transfer":
        sharing.transfer_ownership(access, int(post["grant_id"]), request)
        messages.success(request, "The notebook has a new owner; you keep edit-and-run access.")
    elif action == "settings":
        sharing.set_editors_can_share(access, post.get("editors_can_share") == "on", request)
    elif action == "resend":
        sharing.resend_invitation(access, int(post["invitation_id"]), request)
        messages.success(request, "The invitation was sent again.")
    elif action == "withdraw":
        sharing.withdraw_invitation(access, int(post["invitation_id"]), request)
    else:
        raise ShareError("Unknown sharing action.")
