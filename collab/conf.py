"""The real-time engine's settings (`settings.COLLAB`), read when used so tests can change them."""

from __future__ import annotations

from django.conf import settings


def conf(name: str):
    return settings.COLLAB[name]
