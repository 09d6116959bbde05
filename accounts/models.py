from __future__ import annotations

import hashlib

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models

# Readable on white, distinct from each other: presence colours.
PALETTE = [
    "#d9480f",
    "#1971c2",
    "#2b8a3e",
    "#ae3ec9",
    "#e8590c",
    "#0c8599",
    "#c2255c",
    "#5f3dc4",
    "#66a80f",
    "#1864ab",
    "#a61e4d",
    "#087f5b",
]


def colour_for(key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return PALETTE[digest[0] % len(PALETTE)]


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **fields):
        user = self.model(email=self.normalize_email(email), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **fields):
        fields.setdefault("is_staff", True)
        fields.setdefault("is_superuser", True)
        return self.create_user(email, password, **fields)


class User(AbstractUser):
    """A person with an account. Logs in with the email address; shown by display name."""

    username = None
    email = models.EmailField("email address", unique=True)
    display_name = models.CharField(max_length=80, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return self.display_name or self.email.split("@")[0]

    @property
    def colour(self) -> str:
        return colour_for(f"u:{self.pk}")

    @property
    def initials(self) -> str:
        parts = self.name.replace(".", " ").split()
        return "".join(p[0] for p in parts[:2]).upper() or "?"
