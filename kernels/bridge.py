"""The kernel bridge: one kernel per notebook per process, driven independently of browsers.

Rules:
- One `KernelBridge` per notebook per worker process (`get_bridge`), living in the event loop
  where the Rooms live; it never blocks: REST/websocket through `kernels.jupyter`, audit events
  through `database_sync_to_async` in background tasks.
- While a kernel runs the bridge holds the notebook's Room (`room.hold()`), so outputs keep
  landing in the document (and the database) with no browser connected; `shutdown()` releases it.
- Every change to the document goes through `room.edit(...)`, so it is persisted and relayed
  like a client's update. Outputs are batched: events are collected and flushed in one
  `room.edit` at most every `KERNEL_FLUSH_INTERVAL` seconds (the first after a quiet spell at once,
  and at the end of each run).
- One run queue per notebook, one execution in flight. A run reads the cell's source from the
  Room's doc when it starts (not when it was queued). A cell that is gone is skipped.
- A lost kernel (died, restarted) fails the running cell with a visible error output and
  clears the queue. One the deployment's own server stopped because the notebook's home went
  past its quota (`kernels.diskuse`) says so, in the cell and in the status `message`.
- Kernel state (`status`, `queue`, `running`, `message`) is broadcast to this worker's sockets
  (`room.set_kernel_state`) and to other workers (`fanout().publish({"type": "kernel", ...})`).
  `message` reaches only the people who may run; a failed run's cell says only that it failed
  (`CELL_NOT_RUN`), and the reason is one of `kernels.jupyter`'s fixed sentences, never what a
  kernel server sent.
- Everything the bridge starts runs in a fresh `contextvars.Context` (`kernels.jobs.detached`): a task
  created inside a request would otherwise inherit the request's asgiref thread-sensitive
  executor, which is gone once the response is sent, and every later `database_sync_to_async`
  (audit, the Room's writer) would fail.
- Several workers: a bridge only knows its own process. `kernels.cluster` makes sure exactly one
  worker has a bridge with a kernel for a notebook (a lease) and forwards requests to it; the
  views go through `kernels.cluster`, never straight to a bridge.
- The kernel server is the notebook's choice (`kernels.servers.connection_for`: the owner's
  registered server and kernelspec) or `settings.JUPYTER_SERVER_URL` / `JUPYTER_SERVER_TOKEN`,
  read when the kernel is started (so tests and `serve` can set them late). URL, token and
  kernel id never reach a browser.
- `input()`: the request is shown in the status payload (`input`: cell, prompt, password flag
  and `for_user`, the principal key of the person who ran the cell); only that person's answer
  (`answer_input`) is sent to the kernel. Unanswered after `KERNEL_INPUT_TIMEOUT` seconds, the
  cell gets a stderr line saying so and the kernel is interrupted (`input()` raises
  KeyboardInterrupt), so a forgotten prompt never blocks the notebook's queue.
- A kernel with nothing queued or running for `KERNEL_IDLE_SHUTDOWN` seconds is shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from pycrdt import Doc

from collab.rooms import Room
from kernels import assist
from kernels.diskuse import QUOTA_REASON
from kernels.execution import (
    LOST_STATES,
    Event,
    Finished,
    InputRequested,
    KernelLost,
    KernelStatus,
    Output,
)
from kernels.jobs import (
    CELL_NOT_RUN,
    NOT_REACHED,
    InputRefused,
    Job,
    PendingInput,
    connection_lost_message,
    detached,
    died_message,
    load_user,
    log_failure,
    principal_key,
    quota_messages,
    request_meta,
    settle,
    write_audit,
)
from kernels.jupyter import JupyterClient, KernelChannels, KernelServerError
from kernels.outputs import OutputWriter
from kernels.outputsink import OutputSink, _Batch
from kernels.prompts import InputPrompts
from kernels.runqueue import RunQueue
from kernels.takeover import Takeover

log = logging.getLogger(__name__)

__all__ = [
    "BRIDGES",
    "CELL_NOT_RUN",
    "InputRefused",
    "KernelBridge",
    "get_bridge",
    "load_user",
    "principal_key",
    "request_meta",
]

BRIDGES: dict[str, KernelBridge] = {}


def get_bridge(notebook_id: Any) -> KernelBridge:
    """This process's bridge for the notebook (created on first use; no kernel yet)."""
    key = str(notebook_id)
    bridge = BRIDGES.get(key)
    if bridge is None:
        bridge = BRIDGES[key] = KernelBridge(key)
    return bridge


class KernelBridge(RunQueue, Takeover, InputPrompts, OutputSink):
    """See the module rules; each job is a part of its own (run queue, takeover, prompts,
    output sink), and this class holds the state they share and the kernel's lifecycle."""

    def __init__(self, notebook_id: str) -> None:
        self.notebook_id = notebook_id
        self.room: Room | None = None
        self.writer: OutputWriter | None = None
        self.client: JupyterClient | None = None
        self.channels: KernelChannels | None = None
        self.kernel_id: str | None = None
        self.session_id: str | None = None
        self._on_default_server = True
        self.status = "not started"
        self.message = ""
        self.queue: deque[Job] = deque()
        self.running: Job | None = None
        self._jobs: dict[str, Job] = {}  # msg_id -> job still running
        self._cells: OrderedDict[str, str] = OrderedDict()  # recent msg_ids -> cell id (late output)
        self._batch = _Batch()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while the queue is empty and nothing runs
        self._idle.set()
        self._driver: asyncio.Task | None = None
        self._reader: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self.input: PendingInput | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._over_quota = False  # the kernel was last lost because its home went past the quota

    def info(self) -> dict[str, Any]:
        """The KERNEL frame payload (also the status endpoint's JSON)."""
        return {
            "status": self.status,
            "queue": [job.cell_id for job in self.queue],
            "running": self.running.cell_id if self.running else None,
            "message": self.message,
            "input": self.input.public() if self.input else None,
        }

    async def interrupt(self, user: Any = None, request_meta: dict[str, Any] | None = None) -> None:
        await detached(self._interrupt(user, request_meta))

    async def _interrupt(self, user: Any, request_meta: dict[str, Any] | None) -> None:
        if self.channels is None:
            return
        self._drop_input()
        await self.channels.interrupt()
        self._audit("kernel.interrupted", user, request_meta)

    async def restart(self, user: Any = None, request_meta: dict[str, Any] | None = None) -> None:
        """Restart the kernel: the running cell fails, the queue is cleared."""
        await detached(self._restart(user, request_meta))

    async def _restart(self, user: Any, request_meta: dict[str, Any] | None) -> None:
        if self.channels is None:
            return
        self.status = "restarting"
        self._drop_input()
        await self._broadcast()
        queued = list(self.queue)  # cleared; runs asked for while it restarts go to the new kernel
        lost = await self.channels.restart()
        if lost is not None:
            await self._lost(lost, "The kernel was restarted while this cell was running.", queued)
        else:
            await self._drop_queue(queued)
        self.status = "idle"
        self._audit("kernel.restarted", user, request_meta)
        await self._broadcast()

    async def shutdown(
        self,
        user: Any = None,
        request_meta: dict[str, Any] | None = None,
        message: str = "",
        keep_kernel: bool = False,
    ) -> None:
        """Stop the kernel, the tasks, release the Room and forget this bridge. `message` is
        shown to everyone in the notebook (why the kernel stopped). `keep_kernel`: only let go
        of it (another worker holds the lease now and drives it)."""
        await detached(self._shutdown(user, request_meta, message, keep_kernel))

    async def _shutdown(
        self, user: Any, request_meta: dict[str, Any] | None, message: str = "", keep_kernel: bool = False
    ) -> None:
        if BRIDGES.get(self.notebook_id) is self:
            del BRIDGES[self.notebook_id]
        self._disarm_idle()
        self._drop_input()
        self.message = message
        had_kernel = self.kernel_id is not None
        for task in (self._driver, self._reader):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                await settle([task], self.notebook_id)
        if self.running is not None:
            job = self.running
            await self._edit(lambda doc: self._fail_cell(job.cell_id, "The kernel was shut down."))
            self._finish(job, "aborted")
        await self._drop_queue()
        if self.channels is not None:
            with contextlib.suppress(Exception):
                await self.channels.close()
        if self.client is not None:
            if self.kernel_id is not None and not keep_kernel:
                with contextlib.suppress(Exception):
                    await self.client.shutdown_kernel(self.kernel_id)
            await self.client.aclose()
        self.channels = self.client = None
        self.kernel_id = self.session_id = None
        self.status = "not started"
        if had_kernel and not keep_kernel:
            self._audit("kernel.shut_down", user, request_meta)
            self._remember()
        await self._broadcast()
        self._idle.set()
        if self._background:
            await settle(list(self._background), self.notebook_id)
        if self.room is not None:
            self.room.release()
            self.room = None

    async def _read(self) -> None:
        """Dispatch the kernel's events; ends (and fails what runs) if the kernel is gone."""
        assert self.channels is not None
        try:
            async for event in self.channels.events():
                await self._on_event(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("kernel channels of %s ended: %r", self.notebook_id, exc)
            lost = self.channels.abandon("dead") if self.channels else None
            self.channels = None
            self.kernel_id = None
            self.status = "dead"
            cell_message, self.message = connection_lost_message(exc, self._on_default_server)
            await self._fail_queue(NOT_REACHED)
            if lost is not None:
                await self._lost(lost, cell_message)
            await self._broadcast()

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, Output):
            cell_id = self._cells.get(event.msg_id)
            if cell_id is not None:
                self._collect(cell_id, event)
        elif isinstance(event, InputRequested):
            await self._on_input_request(event)
        elif isinstance(event, Finished):
            await self._flush()
            if self.input is not None and self.input.msg_id == event.msg_id:
                self._drop_input()
            job = self._jobs.pop(event.msg_id, None)
            if job is not None:
                count = event.reply.get("execution_count")

                def done(doc: Doc) -> None:
                    assert self.writer is not None
                    if count is not None:
                        self.writer.set_execution_count(job.cell_id, count)
                    self.writer.set_execution_state(job.cell_id, "idle")

                await self._edit(done, getattr(job.user, "pk", None), within=0)
                job.execution_count = count
                self._finish(job, event.status)
        elif isinstance(event, KernelStatus):
            self.status = event.state
            if event.state in LOST_STATES:
                self._over_quota = await self._stopped_for_quota()
                if self._over_quota:
                    self.message = quota_messages()[1]
            await self._broadcast()
        elif isinstance(event, KernelLost):
            cell_message = quota_messages()[0] if self._over_quota else died_message(self._on_default_server)
            await self._lost(event, cell_message)

    async def _stopped_for_quota(self) -> bool:
        """The deployment's own server stopped the kernel because the notebook's home went past
        its quota: it says so in the kernel model's `reason` (`kernels.diskuse`), which holds
        until the kernel dies again. No other server is asked, and nothing it says is shown."""
        counted = settings.KERNEL_SANDBOX != "off" and settings.KERNEL_HOME_QUOTA_MB > 0
        if not (counted and self._on_default_server) or self.client is None or self.kernel_id is None:
            return False
        try:
            model = await self.client.get_kernel(self.kernel_id)
        except KernelServerError:
            return False
        return model is not None and model.get("reason") == QUOTA_REASON

    async def assist(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Completion or inspection from the running kernel (see `kernels.assist`)."""
        if self.channels is None or self.status not in ("idle", "busy"):
            raise InputRefused(409, assist.NO_KERNEL_TO_ASK)
        msg_type, content = assist.request(op, args)
        try:
            reply = await self.channels.ask(msg_type, content, settings.KERNEL_ASSIST_TIMEOUT)
        except TimeoutError:
            raise InputRefused(504, assist.KERNEL_BUSY) from None
        except KernelServerError:
            raise InputRefused(503, assist.NO_KERNEL_TO_ASK) from None
        return assist.shape(op, reply)

    def _audit(self, action: str, user: Any, request_meta: dict[str, Any] | None, **details: Any) -> None:
        """Write an audit event in a thread, without making anyone wait for it."""
        self._spawn(
            database_sync_to_async(write_audit)(action, self.notebook_id, user, request_meta or {}, details)
        )

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(log_failure)
