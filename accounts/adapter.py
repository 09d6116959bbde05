from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter


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
