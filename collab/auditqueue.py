"""Audit events the real-time engine could not write (the database away): kept in this worker's
memory and written once the database answers again, with the time they happened.

The end of a session (`session.left`, with its edit counts and the cells it touched) is written
as its socket closes. During a database outage every closing socket's event failed, was logged
and lost: 5-8 per worker in a 10 s outage, their people's sessions left without an end. Now
each is kept, in order, and one task per worker writes them in batches every
`AUDIT_RETRY_INTERVAL` seconds until none is left. At most `AUDIT_QUEUE_MAX` are kept; beyond
that the oldest are dropped, counted and logged (a worker holds no more than a few MB for
them). What a worker holds when it stops is lost. A batch whose commit's answer was lost may be
written twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from channels.db import database_sync_to_async
from django.db import DatabaseError, InterfaceError, OperationalError

from audit import log as audit
from audit.models import AuditEvent
from config.failures import FailureLog

log = logging.getLogger(__name__)

AUDIT_QUEUE_MAX = 10_000
AUDIT_RETRY_INTERVAL = 2.0  # s
BATCH = 500
UNREACHABLE = (OperationalError, InterfaceError)  # what a database that is away raises


class AuditQueue:
    def __init__(self, limit: int = AUDIT_QUEUE_MAX, interval: float = AUDIT_RETRY_INTERVAL):
        self.events: deque[AuditEvent] = deque()
        self.limit = limit
        self.interval = interval
        self.dropped = 0
        self._task: asyncio.Task | None = None
        self._failures = FailureLog(log, "writing audit events kept through an outage")

    def keep(self, event: AuditEvent) -> None:
        """An event whose write failed: written later (in the running event loop's task)."""
        if len(self.events) >= self.limit:
            self.events.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "%d audit events dropped: more than %d waited for the database", self.dropped, self.limit
                )
        self.events.append(event)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._write_later(), name="audit queue")

    async def _write_later(self) -> None:
        while self.events:
            await asyncio.sleep(self.interval)
            batch = list(self.events)[:BATCH]
            try:
                written = await database_sync_to_async(_write)(batch)
            except UNREACHABLE as exc:  # the database still away: the next interval tries again
                self._failures.failed(exc, f"retrying every {self.interval:g} s")
                continue
            self._failures.worked()
            self.dropped += len(batch) - written
            done = set(map(id, batch))  # not the first len(batch): `keep` may have dropped some
            self.events = deque(event for event in self.events if id(event) not in done)


def _write(batch: list[AuditEvent]) -> int:
    """Write `batch`, in one statement if the database takes it whole; if it refuses it (an
    actor deleted meanwhile), one by one, leaving out those it refuses: a refused event is
    not tried for ever, nor does it hold back the others. How many were written."""
    try:
        audit.record_many(batch)
        return len(batch)
    except UNREACHABLE:
        raise
    except DatabaseError:
        pass
    written = 0
    for event in batch:
        try:
            audit.record_many([event])
            written += 1
        except UNREACHABLE:
            raise
        except DatabaseError as exc:
            log.warning("an audit event kept through an outage could not be written: %r", exc)
    return written


_queue: AuditQueue | None = None


def audit_queue() -> AuditQueue:
    """This worker's queue."""
    global _queue
    if _queue is None:
        _queue = AuditQueue()
    return _queue
