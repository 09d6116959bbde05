from __future__ import annotations

from urllib.parse import quote

from allauth.account.adapter import DefaultAccountAdapter
from django.urls import reverse

from notebooks.emails import absolute


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=False)
        user.display_name = form.cleaned_data.get("display_name", "")
        if commit:
            user.save()
        return user

    def unstash_verified_email(self, request):
        """An invitation link proves its address (`notebooks.views.requests`): the address
        counts as verified only when it is the one the person signs up with."""
        stashed = super().unstash_verified_email(request)
        typed = request.POST.get("email", "") if request is not None and request.method == "POST" else ""
        return stashed if stashed and typed.strip().lower() == stashed.lower() else None

    # Links carrying a secret go to this server (`notebooks.emails.absolute`), never to a port a
    # forged Host names: whoever listened there would confirm the address or reset the password.
    def get_email_confirmation_url(self, request, emailconfirmation):
        return absolute(request, reverse("account_confirm_email", args=[emailconfirmation.key]))

    def get_reset_password_from_key_url(self, key):
        path = reverse("account_reset_password_from_key", kwargs={"uidb36": "UID", "key": "KEY"})
        return absolute(self.request, path.replace("UID-KEY", quote(key)))
