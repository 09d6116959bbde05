"""PostgreSQL's row locks, seen from a test."""

from __future__ import annotations

from django.db import connections


def waiting_for_a_lock() -> bool:
    """Whether a connection to the test database waits for a lock now (PostgreSQL)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else one snapshot per transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0
