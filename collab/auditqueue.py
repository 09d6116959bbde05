"""Audit events the real-time engine could not write (the database away): kept in this worker's
memory and written once the database answers again, with the time they happened.

The end of a session (`session.left`, with its edit counts and the cells it touched) is written
as its socket closes. During a database outage every closing socket's event failed, was logged
and lost: 5-8 per worker in a 10 s outage, their people's sessions left without an end. Now
each is kept, in order, and one task per worker writes them in batches every
`AUDIT_RETRY_INTERVAL` seconds until none is left. At most `AUDIT_QUEUE_MAX` events and about
`AUDIT_QUEUE_MAX_BYTES` are kept (an event lists the cells its session touched: up to 10,000
ids, about 0.9 MB); beyond that the oldest are dropped, counted and logged. What a worker holds
when it stops is lost. A batch whose commit's answer was lost may be written twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from channels.db import database_sync_to_async
from django.db import IntegrityError

from audit import log as audit
from audit.models import AuditEvent
from config.failures import FailureLog

log = logging.getLogger(__name__)

AUDIT_QUEUE_MAX = 10_000
AUDIT_QUEUE_MAX_BYTES = 16 << 20
AUDIT_RETRY_INTERVAL = 2.0  # s
BATCH = 50  # a refused batch is written again one by one: 50 hold the database thread briefly


class AuditQueue:
    def __init__(
        self,
        limit: int = AUDIT_QUEUE_MAX,
        interval: float = AUDIT_RETRY_INTERVAL,
        max_bytes: int = AUDIT_QUEUE_MAX_BYTES,
    ):
        self.events: deque[AuditEvent] = deque()
        self.bytes = 0  # their estimated size (`_size`)
        self.limit = limit
        self.max_bytes = max_bytes
        self.interval = interval
        self.dropped = 0
        self._task: asyncio.Task | None = None
        self._failures = FailureLog(log, "writing audit events kept through an outage")

    def keep(self, event: AuditEvent) -> None:
        """An event whose write failed: written later (in the running event loop's task)."""
        self.events.append(event)
        self.bytes += _size(event)
        while len(self.events) > self.limit or (self.bytes > self.max_bytes and len(self.events) > 1):
            self.bytes -= _size(self.events.popleft())
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "%d audit events dropped: more than %d events or %d bytes waited for the database",
                    self.dropped,
                    self.limit,
                    self.max_bytes,
                )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._write_later(), name="audit queue")

    async def _write_later(self) -> None:
        """Batches back to back while the database takes them (each a short call on the shared
        database thread, so other queries go between them); every `interval` while it fails."""
        while self.events:
            batch = list(self.events)[:BATCH]
            done, refused, error = await database_sync_to_async(_write)(batch)
            self.dropped += refused
            finished = set(map(id, done))  # not the first ones: `keep` may have dropped some
            self.events = deque(event for event in self.events if id(event) not in finished)
            self.bytes = sum(map(_size, self.events))
            if error is None:
                self._failures.worked()
                continue
            self._failures.failed(error, f"retrying every {self.interval:g} s")
            await asyncio.sleep(self.interval)


def _size(event: AuditEvent) -> int:
    """About what a kept event holds: the object and its fields, and each cell id it lists."""
    return 1024 + sum(len(cell) + 60 for cell in event.details.get("cells", ()))


def _write(batch: list[AuditEvent]) -> tuple[list[AuditEvent], int, Exception | None]:
    """Write `batch`: the events done with (written, or refused), how many were refused, and the
    error that stopped it. In one statement if the database takes it whole; if it refuses it
    for one event's sake (an integrity error: its actor deleted meanwhile), one by one,
    leaving out those refused, which are not tried for ever nor hold back the others. Any
    other error (the database away, or read-only through a failover) stops it: what is left
    waits."""
    try:
        audit.record_many(batch)
        return batch, 0, None
    except IntegrityError:
        pass
    except Exception as exc:
        return [], 0, exc
    done: list[AuditEvent] = []
    refused = 0
    for event in batch:
        try:
            audit.record_many([event])
        except IntegrityError as exc:
            log.warning("an audit event kept through an outage could not be written: %r", exc)
            refused += 1
        except Exception as exc:
            return done, refused, exc
        done.append(event)
    return done, refused, None


_queue: AuditQueue | None = None


def audit_queue() -> AuditQueue:
    """This worker's queue."""
    global _queue
    if _queue is None:
        _queue = AuditQueue()
    return _queue
