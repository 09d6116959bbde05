from allauth.account.signals import email_confirmed, user_logged_in, user_signed_up
from django.apps import AppConfig


def _bind_on_confirm(request, email_address, **kwargs) -> None:
    """Invitations to an address bind to its user once the address is verified."""
    from notebooks.sharing import bind_invitations  # models are not loaded when apps.py is

    bind_invitations(email_address.user, request=request)


def _bind_on_login(request, user, **kwargs) -> None:
    """... or when a user logs in or signs up with it."""
    from notebooks.sharing import bind_invitations  # models are not loaded when apps.py is

    bind_invitations(user, request=request)


class NotebooksConfig(AppConfig):
    name = "notebooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        email_confirmed.connect(_bind_on_confirm, dispatch_uid="notebooks.bind_on_confirm")
        user_logged_in.connect(_bind_on_login, dispatch_uid="notebooks.bind_on_login")
        user_signed_up.connect(_bind_on_login, dispatch_uid="notebooks.bind_on_signup")
