from __future__ import annotations

from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms

from accounts.models import User


class SignupForm(AllauthSignupForm):
    display_name = forms.CharField(
        max_length=80, label="Your name", help_text="Shown to people you work with."
    )
    field_order = ["display_name", "email", "password1", "password2"]


class ProfileForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["display_name"]
        labels = {"display_name": "Display name"}
