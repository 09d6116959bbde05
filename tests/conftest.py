"""The cast: Alice owns notebooks, Bob is someone she shares with, Charlie has no access."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.cache import cache

from collab import fanout
from notebooks import actions
from tests.support.cast import make_user
from tests.support.corpus import CORPUS


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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Before a test's database is emptied, let the database work its event loop left behind
    finish: a task cancelled while `database_sync_to_async` ran its query leaves that query
    running in asgiref's thread (or the edit path's), and on PostgreSQL it deadlocks with the
    teardown's TRUNCATE."""
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from collab import tasks

    # After the last test, that thread's connection is closed too, or PostgreSQL refuses to
    # drop the test database ("being accessed by other users"). So is the edit path's thread's:
    # channels' test communicators turn `close_old_connections` into a no-op (for every thread)
    # while they send or wait, so a room's query made meanwhile keeps its connection open.
    last = connections.close_all if nextitem is None else (lambda: None)
    for executor in (SyncToAsync.single_thread_executor, tasks._EDITS):
        executor.submit(last).result(timeout=60)


@pytest.fixture(autouse=True)
def _nobody_kept_out():
    """A person kept out of notebooks on this worker (`collab.consumers.KEPT_OUT`) is a user id
    the next test's users may have again."""
    yield
    from collab import consumers

    consumers.KEPT_OUT.clear()


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
    # PBKDF2's 1,000,000 rounds cost ~0.35 s of CPU per user made or password checked; no test
    # is about the hash's strength, so the test cast's passwords use a fast hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()  # rate-limit counters
    settings.ACCOUNT_RATE_LIMITS = False
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


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
