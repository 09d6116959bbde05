from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.forms import ProfileForm


@login_required
def profile(request):
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Your display name is saved.")
        return redirect("profile")
    return render(request, "account/profile.html", {"form": form})


def admin_login(request, extra_context=None):
    """The admin's own login form is never throttled, so it takes no passwords: people sign in
    through allauth's login (rate-limited) and come back; signed-in staff go straight on."""
    target = request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = "/admin/"
    if not request.user.is_authenticated:
        return redirect_to_login(target or "/admin/")
    if not request.user.is_staff:
        raise PermissionDenied("Your account cannot use the admin site.")
    return redirect(target or "/admin/")
