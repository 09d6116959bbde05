"""Invitations bind when an address is verified or a user logs in with it."""

from __future__ import annotations

from allauth.account.signals import email_confirmed, user_logged_in, user_signed_up
from django.dispatch import receiver


@receiver(email_confirmed)
def _bind_on_confirm(request, email_address, **kwargs):
    from notebooks.sharing import bind_invitations

    bind_invitations(email_address.user, request=request)


@receiver(user_logged_in)
@receiver(user_signed_up)
def _bind_on_login(request, user, **kwargs):
    from notebooks.sharing import bind_invitations

    bind_invitations(user, request=request)
