"""Sharing changes and a room's writes at once, on PostgreSQL: a sharing change counts up the
notebook's `access_version` (an UPDATE of the notebook's row), and a room's batch write numbers
its rows in an UPDATE of that row too, then inserts them, each referring to the link its guest
came through. Both must take the two rows in the same order, or each waits for the other."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from notebooks import links, sharing, updatelog
from notebooks.models import Role, ShareLink
from notebooks.updatelog import Pending
from tests.support.locks import waiting_for_a_lock
from tests.support.principals import owner_access

pytestmark = pytest.mark.django_db(transaction=True)


def _with_a_guests_edit_written_meanwhile(monkeypatch, notebook, link: ShareLink, action: str) -> dict:
    """Once `action` is under way (its audit record, inside its transaction), a guest who came
    through `link` has an edit written by their room, in another thread (another connection):
    the change then goes on while that write is under way or waits."""
    results: dict = {}

    def write_a_guests_edit():
        try:
            results["seq"] = updatelog.append(notebook.pk, [Pending(b"\x00\x00", None, link.pk)])
        except Exception as exc:
            results["error"] = exc
        finally:
            connections.close_all()

    real_record = links.audit.record

    def record_while_the_room_writes(kind, *args, **kwargs):
        done = real_record(kind, *args, **kwargs)
        if kind == action:
            writer = threading.Thread(target=write_a_guests_edit)
            writer.start()
            deadline = time.monotonic() + 10
            while writer.is_alive() and not waiting_for_a_lock() and time.monotonic() < deadline:
                writer.join(0.01)
            results["writer"] = writer
        return done

    monkeypatch.setattr(links.audit, "record", record_while_the_room_writes)
    return results


@pytest.mark.parametrize("action", ["link.revoked", "link.renewed"])
def test_a_link_changed_while_its_guest_edits_is_no_deadlock(notebook, monkeypatch, action):
    if connections["default"].vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite takes one write at a time)")
    owner = owner_access(notebook)
    if action == "link.revoked":
        link, _ = sharing.create_link(owner, label="class", role=Role.EDITOR, require_login=False)
    else:
        sharing.set_general_access(owner, "anyone", Role.EDITOR)
        link = ShareLink.objects.get(notebook=notebook, general=True)
    results = _with_a_guests_edit_written_meanwhile(monkeypatch, notebook, link, action)
    started = time.monotonic()
    if action == "link.revoked":
        sharing.revoke_link(owner, link.pk)
    else:
        sharing.renew_general_link(owner)
    results["writer"].join(10)
    took = time.monotonic() - started
    assert "error" not in results, results  # was: DeadlockDetected after 1 s (deadlock_timeout)
    assert results["seq"] >= 1
    assert took < 0.9, f"the change and the write waited {took:.2f} s for each other"
