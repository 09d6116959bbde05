from __future__ import annotations

from allauth.account import app_settings
from allauth.account.adapter import get_adapter
from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms
from django.shortcuts import redirect

from accounts.models import User


class SignupForm(AllauthSignupForm):
    display_name = forms.CharField(
        max_length=80, label="Your name", help_text="Shown to people you work with."
    )
    field_order = ["display_name", "email", "password1", "password2"]

    def validate_unique_email(self, value) -> str:
        """allauth hides that an address is registered only when verification is mandatory;
        with `optional` or `none` it says "already registered". Here no mode says so: see
        `try_save`."""
        try:
            return super().validate_unique_email(value)
        except forms.ValidationError as e:
            if e.code != "email_taken":
                raise
            self.account_already_exists = True
            return value

    def try_save(self, request):
        """A registered address creates nothing: its owner is told by email, and the answer
        is the redirect a new account gets (allauth's own way works only in mandatory mode)."""
        mandatory = app_settings.EMAIL_VERIFICATION == app_settings.EmailVerificationMethod.MANDATORY
        if not self.account_already_exists or mandatory:
            return super().try_save(request)
        adapter = get_adapter()
        adapter.send_account_already_exists_mail(self.cleaned_data["email"])
        return None, redirect(adapter.get_signup_redirect_url(request))


class ProfileForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["display_name"]
        labels = {"display_name": "Display name"}
