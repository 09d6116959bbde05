"""The bridge's run queue: one per notebook, one execution in flight. A run reads the cell's
source from the Room's doc when it starts (not when it was queued); a cell that is gone is
skipped. A kernel with nothing queued or running for `KERNEL_IDLE_SHUTDOWN` seconds is shut
down. Runs in the event loop.

Needs from the bridge: the takeover's `_ensure_kernel`, `channels`, `_remember`; the output
sink's `_ensure_room`, `_edit`, `_mark`, `_fail_cell`, `_broadcast`; `shutdown`, `_audit`,
`_spawn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import time
from collections import deque
from typing import Any

from django.conf import settings
from pycrdt import Doc

from kernels.execution import KernelLost
from kernels.jobs import (
    CELL_NOT_RUN,
    Job,
    detached,
    log_failure,
    principal_key,
    reason,
)
from notebooks.docschema import cell_source

log = logging.getLogger("kernels.bridge")

_STOPPING: set[asyncio.Task] = set()  # idle shutdowns in progress


class RunQueue:
    notebook_id: str
    queue: deque[Job]
    running: Job | None

    async def enqueue(
        self,
        cell_ids: list[str],
        user: Any,
        request_meta: dict[str, Any] | None = None,
        who: str | None = None,
    ) -> list[str]:
        """Queue the cells (in order); returns the ids queued. The runs happen in the background.
        `who` (default: the user's principal key) is the only one who may answer `input()`."""
        key = principal_key(user) if who is None else who
        return await detached(self._enqueue(cell_ids, user, request_meta, key))

    async def _enqueue(
        self, cell_ids: list[str], user: Any, request_meta: dict[str, Any] | None, who: str
    ) -> list[str]:
        room = await self._ensure_room()
        queued = [str(c) for c in cell_ids if cell_source(room.doc, str(c)) is not None]
        for cell_id in queued:
            self.queue.append(Job(cell_id, user, dict(request_meta or {}), who))
        if queued:
            self._disarm_idle()
            uid = getattr(user, "pk", None)
            delay = settings.KERNEL_MARK_WRITE_DELAY
            await room.edit(lambda doc: self._mark(queued, "queued"), user_id=uid, within=delay)
            if self._driver is None or self._driver.done():
                self._driver = asyncio.create_task(self._drive(), name=f"kernel-bridge-{self.notebook_id}")
            starts_now = self.running is None and len(self.queue) == len(queued)
            self._idle.clear()
            self._wake.set()
            if not starts_now:  # else the run's own status, sent right after the kernel has it
                await self._broadcast()
        return queued

    async def wait_idle(self) -> None:
        """Wait until the queue is empty, nothing runs, and audit events are written (tests)."""
        await self._idle.wait()
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _drive(self, resumed: Job | None = None) -> None:
        """The run loop: one job at a time, in queue order (after a run taken over, if any)."""
        if resumed is not None and resumed.done is not None:
            try:
                await resumed.done
            finally:
                if self.running is resumed:
                    self.running = None
                await self._broadcast()
        while True:
            if not self.queue:
                self._idle.set()
                self._arm_idle()
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self.queue.popleft()
            self.running = job
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("running cell %s of %s failed", job.cell_id, self.notebook_id, exc_info=True)
                self.message = f"Could not run: {reason(exc)}"
                if self.channels is None:  # not "starting" forever
                    self.status = "not started"
                with contextlib.suppress(Exception):
                    await self._edit(lambda doc, cid=job.cell_id: self._fail_cell(cid, CELL_NOT_RUN))
                self._finish(job, "error")
                with contextlib.suppress(Exception):  # the cells behind it say why too
                    await self._fail_queue(CELL_NOT_RUN)
            finally:
                if self.running is job:
                    self.running = None
                await self._broadcast()

    async def _run(self, job: Job) -> None:
        await self._ensure_kernel(job)
        assert self.channels is not None
        room = await self._ensure_room()
        source = cell_source(room.doc, job.cell_id)
        if source is None:  # deleted (or turned into markdown) while queued
            self._finish(job, "skipped")
            return
        job.code = source
        uid = getattr(job.user, "pk", None)

        def start(doc: Doc) -> None:
            assert self.writer is not None
            self.writer.clear(job.cell_id)
            self.writer.set_execution_count(job.cell_id, None)
            self.writer.set_execution_state(job.cell_id, "running")

        await self._edit(start, uid, within=settings.KERNEL_MARK_WRITE_DELAY)
        job.done = asyncio.get_running_loop().create_future()
        job.started = time.monotonic()
        self.message = ""
        job.msg_id = await self.channels.execute(source, allow_stdin=True)
        self._jobs[job.msg_id] = job
        self._cells[job.msg_id] = job.cell_id
        while len(self._cells) > 1000:
            self._cells.popitem(last=False)
        await self._broadcast()  # after sending: the kernel starts while the status travels
        self._remember(job.record())
        await job.done

    async def _lost(self, lost: KernelLost, message: str, queued: list[Job] | None = None) -> None:
        """Fail the executions lost; clear the queue (only the jobs `queued`, when given)."""
        self._drop_input()
        await self._flush()
        for msg_id in lost.msg_ids:
            job = self._jobs.pop(msg_id, None)
            if job is not None:
                await self._edit(lambda doc, cid=job.cell_id, text=message: self._fail_cell(cid, text))
                self._finish(job, "lost")
        await self._drop_queue(queued)

    async def _drop_queue(self, only: list[Job] | None = None) -> None:
        """Clear the queue (or take just the jobs `only` out of it); the cells go back to idle."""
        gone = self.queue if only is None else [job for job in self.queue if any(job is o for o in only)]
        dropped = [job.cell_id for job in gone]
        self.queue = deque(job for job in self.queue if not any(job is g for g in gone))
        if dropped:
            await self._edit(lambda doc: self._mark(dropped, "idle"))
        await self._broadcast()

    async def _fail_queue(self, message: str) -> None:
        """Clear the queue, each cell saying why it did not run."""
        dropped = [job.cell_id for job in self.queue]
        self.queue.clear()
        if dropped:
            await self._edit(lambda doc: [self._fail_cell(cell_id, message) for cell_id in dropped])

    def _finish(self, job: Job, outcome: str) -> None:
        job.outcome = outcome
        if job.done is not None and not job.done.done():
            job.done.set_result(outcome)
        if outcome == "skipped":
            return
        duration = round((time.monotonic() - job.started) * 1000) if job.started else 0
        self._audit(
            "cell.executed",
            job.user,
            job.request_meta,
            cell_id=job.cell_id,
            code_sha256=hashlib.sha256(job.code.encode()).hexdigest(),
            code=job.code,
            status=outcome,
            duration_ms=duration,
            execution_count=job.execution_count,
        )

    def _arm_idle(self) -> None:
        """Shut the kernel down after `KERNEL_IDLE_SHUTDOWN` seconds with nothing to run."""
        self._disarm_idle()
        if self.kernel_id is None:
            return
        delay = settings.KERNEL_IDLE_SHUTDOWN
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_shutdown)

    def _disarm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_shutdown(self) -> None:
        self._idle_timer = None
        if self.queue or self.running is not None or self.kernel_id is None:
            return
        seconds = settings.KERNEL_IDLE_SHUTDOWN
        when = f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"
        task = asyncio.get_running_loop().create_task(
            self.shutdown(message=f"The kernel was shut down after {when} without runs."),
            context=contextvars.Context(),
        )
        _STOPPING.add(task)  # a strong reference until it is done
        task.add_done_callback(_STOPPING.discard)
        task.add_done_callback(log_failure)
