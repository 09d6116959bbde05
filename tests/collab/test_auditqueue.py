"""Audit events kept through a database outage (`collab.auditqueue`): one the database refuses
is left out, not tried for ever in front of the others."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from audit import log as audit
from audit.models import AuditEvent
from collab.auditqueue import AuditQueue
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.django_db(transaction=True)


async def test_an_event_the_database_refuses_does_not_hold_back_the_others(notebook, alice):
    queue = AuditQueue(interval=0.01)
    gone = audit.build("session.left", notebook=notebook, label="someone deleted meanwhile")
    gone.actor_id = 10**9  # no such user: the foreign key refuses it
    kept = audit.build("session.left", notebook=notebook, actor=alice)
    queue.keep(gone)
    queue.keep(kept)
    await eventually_async(lambda: not queue.events, what="the queue to be done")
    left = AuditEvent.objects.filter(action="session.left")
    rows = await database_sync_to_async(list)(left.values_list("action", "actor_id"))
    assert rows == [("session.left", alice.pk)]
    assert queue.dropped == 1


async def test_a_database_that_refuses_every_write_for_a_while_loses_no_event(notebook, alice, monkeypatch):
    """A database that answers but takes no write for a while (read-only during a failover or
    maintenance: PostgreSQL raises ReadOnlySqlTransaction, an InternalError) refuses every event
    alike, not one of them: they are waited for, not dropped."""
    from django.db import InternalError

    real, tries = audit.record_many, []

    def read_only_twice(events):
        tries.append(len(events))
        if len(tries) <= 2:
            raise InternalError("cannot execute INSERT in a read-only transaction")
        return real(events)

    monkeypatch.setattr(audit, "record_many", read_only_twice)
    queue = AuditQueue(interval=0.01)
    queue.keep(audit.build("session.left", notebook=notebook, actor=alice))
    await eventually_async(lambda: not queue.events, what="the queue to be done")
    left = AuditEvent.objects.filter(action="session.left")
    rows = await database_sync_to_async(list)(left.values_list("action", "actor_id"))
    assert rows == [("session.left", alice.pk)]
    assert queue.dropped == 0


async def test_the_queue_is_bounded_by_size_as_well_as_count(notebook, alice, monkeypatch):
    """An event lists the cells its session touched (up to 10,000 ids): 10,000 such events
    would have held about 9 GB. The oldest go once the kept ones pass the byte bound."""
    from django.db import OperationalError

    def away(events):
        raise OperationalError("connection refused")

    monkeypatch.setattr(audit, "record_many", away)
    queue = AuditQueue(interval=60, max_bytes=1 << 20)
    cells = [f"cell-{i:032d}" for i in range(1000)]  # about 100 KB an event
    for _ in range(30):
        queue.keep(audit.build("session.left", notebook=notebook, actor=alice, cells=cells))
    assert 5 <= len(queue.events) <= 11, len(queue.events)
    assert queue.bytes <= 1 << 20
    assert queue.dropped == 30 - len(queue.events)
    queue._task.cancel()
