"""The cast and where they sign in: Alice owns notebooks, Bob is someone she shares with,
Charlie has no access (fixtures in tests/conftest.py)."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from accounts.models import User


def make_user(email: str, name: str, password: str = "correct horse battery") -> User:
    user = User.objects.create_user(email, password, display_name=name)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


def session_for(user=None, **data) -> SessionStore:
    session = SessionStore()
    if user is not None:
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    for key, value in data.items():
        session[key] = value
    session.create()
    return session


def cookie_for(user=None, **data) -> str:
    return f"sessionid={session_for(user, **data).session_key}"
