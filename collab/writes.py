"""A room's write pipeline: batching, writing with retries, and compaction. Runs in the event
loop; never blocks: its writes go through `collab.tasks.on_edit_thread`, compaction through a
pool thread of its own.

A mixin of `collab.rooms.Room` (it uses the room's Doc, sockets and relay). Rules:
- what is queued is written in the next batch, once its deadline (`PERSIST_BATCH_WINDOW`, or
  sooner) is due or `PERSIST_BIG_BATCH` changes wait;
- a failed write is retried for `PERSIST_RETRY_FOR` seconds; then the room fails (`Room._fail`);
- compaction runs in its own thread with its own connection: writes never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from django.db import DatabaseError, connection

from collab.conf import conf
from collab.socket import Socket
from collab.tasks import on_edit_thread
from notebooks import updatelog
from notebooks.updatelog import Pending

log = logging.getLogger("collab.rooms")


class WritePipeline:
    def _queue(self, pending: Pending, socket: Socket | None, within: float | None = None) -> None:
        """Queue for the writer; it writes once the earliest deadline of what waits is due."""
        now = asyncio.get_running_loop().time()
        due = now + (conf("PERSIST_BATCH_WINDOW") if within is None else within)
        if not self._pending:
            self._pending_done = asyncio.get_running_loop().create_future()
            self._due = due
        else:
            self._due = min(self._due, due)
        self._pending.append((pending, socket))
        self._active_at = now
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until everything applied so far is in the database."""
        for fut in (self._inflight_done, self._pending_done if self._pending else None):
            if fut is not None and not fut.done():
                await asyncio.shield(fut)

    async def _writer(self) -> None:
        """Write batches one after the other; relaying a committed batch happens in
        `_relayer`, so the next write does not wait for sockets or Redis."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Wait for the batch's deadline; a change queued meanwhile may bring it closer.
            while len(self._pending) < conf("PERSIST_BIG_BATCH") and (delay := self._due - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
            if not self._pending:
                continue
            batch, self._pending = self._pending, []
            # Everything this Doc holds now is durable once this batch commits (older
            # batches and other workers' updates already are): that is what "saved" means.
            durable_state = self.doc.get_state()
            done, self._pending_done = self._pending_done, None
            self._inflight_done = done
            try:
                first = await self._append(batch)
            except updatelog.Replaced as exc:
                done.set_exception(exc)
                done.exception()  # mark retrieved
                await self._replaced()
                return
            except Exception as exc:
                log.error("saving updates of %s failed (%r); closing the room", self.id, exc)
                done.set_exception(exc)
                done.exception()
                await self._fail(exc)
                return
            for seq in range(first, first + len(batch)):
                self._mark(seq)
            done.set_result(None)
            self._committed.put_nowait((first, batch, durable_state))

    async def _append(self, batch: list[tuple[Pending, Socket | None]]) -> int:
        """Write one batch, retrying for `PERSIST_RETRY_FOR` seconds (the database restarting,
        a connection cut). A retry after a commit whose answer was lost writes the updates a
        second time under new numbers: harmless, Yjs ignores what a document already holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + conf("PERSIST_RETRY_FOR")
        delay, failures = 0.05, 0
        while True:
            try:
                first = await on_edit_thread(updatelog.append)(self.id, [p for p, _ in batch], self.epoch)
            except (updatelog.Replaced, LookupError):
                raise
            except Exception as exc:
                if loop.time() + delay > deadline:
                    raise
                if not failures:
                    log.warning("saving updates of %s failed (%r); retrying", self.id, exc)
                failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if failures:
                log.warning("saving updates of %s works again after %d retries", self.id, failures)
            return first

    def _abandon_pending(self, exc: Exception) -> None:
        """The writer has stopped: nothing queued will be written; release its waiters."""
        self._pending.clear()
        if self._pending_done is not None and not self._pending_done.done():
            self._pending_done.set_exception(exc)
            self._pending_done.exception()  # mark retrieved

    def _start_compaction(self) -> None:
        if self._compacting:
            return
        self._compacting = True

        async def run() -> None:
            try:
                # Its own thread and connection: the writes' thread never waits for it.
                compact = database_sync_to_async(_compact, thread_sensitive=False)
                _, self.snapshot_seq = await compact(self.id, conf("KEEP_RECENT_UPDATES"))
            except DatabaseError as exc:
                # Tried again after the next batch: a database dropping connections failed one
                # per batch, each with a traceback.
                self._compaction_failures.failed(exc, "retrying after the next batches")
            except Exception:
                log.exception("compaction of %s failed", self.id)
            else:
                self._compaction_failures.worked()
            finally:
                self._compacting = False

        self._spawn(run(), f"room-compaction-{self.id}")


def _compact(notebook_id: str, keep_recent: int) -> tuple[int, int]:
    """Compaction in a pool thread: its connection is that thread's own, and nothing else
    would ever close it."""
    try:
        return updatelog.compact(notebook_id, keep_recent)
    finally:
        connection.close()
