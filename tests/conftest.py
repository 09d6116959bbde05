"""The cast: Alice owns notebooks, Bob is someone she shares with, Charlie has no access."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache

from accounts.models import User
from collab import fanout
from notebooks import actions

# The notebook corpus lives beside the checkout (../shared/corpus/nbformat) unless CORPUS_DIR says.
CORPUS = Path(
    os.environ.get("CORPUS_DIR", Path(__file__).resolve().parents[2] / "shared" / "corpus" / "nbformat")
)


def pytest_sessionstart(session):
    if not CORPUS.is_dir():
        pytest.exit(
            f"The notebook corpus is not at {CORPUS}: put the shared/ folder beside this checkout "
            "or set CORPUS_DIR to its corpus/nbformat folder.",
            returncode=4,
        )


def pytest_sessionfinish(session, exitstatus):
    """Django removes the SQLite test database file, but not its WAL companions."""
    from django.conf import settings

    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and name:
        for suffix in ("-wal", "-shm"):
            Path(name + suffix).unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _fast_settings(settings, tmp_path):
    settings.COLLAB = {
        **settings.COLLAB,
        "PERSIST_BATCH_WINDOW": 0.001,
        "PERSIST_RETRY_FOR": 0.5,
        "ROOM_UNLOAD_DELAY": 0.05,
        "GAP_REPAIR_DELAY": 0.05,
        "RESYNC_INTERVAL": 0.2,
        "RESYNC_ACTIVE_FOR": 5.0,
        "ACCESS_RECHECK_INTERVAL": 0.5,
    }
    fanout._fanout = None  # each test has its own event loop, so its own fan-out reader
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    cache.clear()  # rate-limit counters
    settings.ACCOUNT_RATE_LIMITS = False
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def make_user(email: str, name: str, password: str = "correct horse battery") -> User:
    user = User.objects.create_user(email, password, display_name=name)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@pytest.fixture
def alice(db):
    return make_user("alice@example.com", "Alice Smith")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com", "Bob Jones")


@pytest.fixture
def charlie(db):
    return make_user("charlie@example.com", "Charlie Brown")


@pytest.fixture
def notebook(alice):
    return actions.create_blank(alice, title="Alice's analysis")


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
