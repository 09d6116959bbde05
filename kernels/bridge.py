"""The kernel bridge: one kernel per notebook per process, driven independently of browsers.

Rules:
- One `KernelBridge` per notebook per worker process (`get_bridge`), living in the event loop
  where the Rooms live; it never blocks: REST/websocket through `kernels.jupyter`, audit events
  through `database_sync_to_async` in background tasks.
- While a kernel runs the bridge holds the notebook's Room (`room.hold()`), so outputs keep
  landing in the document (and the database) with no browser connected; `shutdown()` releases it.
- Every change to the document goes through `room.edit(...)`, so it is persisted and relayed
  like a client's update. Outputs are batched: events are collected and flushed in one
  `room.edit` at most every `FLUSH_INTERVAL` seconds (the first after a quiet spell at once,
  and at the end of each run).
- One run queue per notebook, one execution in flight. A run reads the cell's source from the
  Room's doc when it starts (not when it was queued). A cell that is gone is skipped.
- A lost kernel (died, restarted) fails the running cell with a visible error output and
  clears the queue.
- Kernel state (`status`, `queue`, `running`, `message`) is broadcast to this worker's sockets
  (`room.set_kernel_state`) and to other workers (`fanout().publish({"type": "kernel", ...})`).
  `message` reaches only the people who may run; a failed run's cell says only that it failed
  (`CELL_NOT_RUN`), and the reason is one of `kernels.jupyter`'s fixed sentences, never what a
  kernel server sent.
- Everything the bridge starts runs in a fresh `contextvars.Context` (`_detached`): a task
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
import contextvars
import hashlib
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from pycrdt import Array, Doc, Map

from collab.fanout import fanout
from collab.rooms import Room, get_room
from kernels import assist, leases, servers
from kernels.execution import Event, Finished, InputRequested, KernelLost, KernelStatus, Output
from kernels.jupyter import JupyterClient, KernelChannels, KernelGone, KernelServerError
from kernels.outputs import OutputWriter

log = logging.getLogger(__name__)
# In the cell, which everyone who can open the notebook sees; the reason goes to the kernel
# status, which only the people who may run receive (`collab.rooms.Room.set_kernel_state`).
CELL_NOT_RUN = "Could not run: the kernel could not be started or reached. The kernel status says why."

FLUSH_INTERVAL = 0.05  # seconds between output flushes into the document
# A run's "queued"/"running" marks may wait this long to be written together with its first
# output: one database write instead of two, none of them competing with the kernel's start.
MARK_WRITE_DELAY = 0.03

BRIDGES: dict[str, KernelBridge] = {}
_STOPPING: set[asyncio.Task] = set()  # idle shutdowns in progress


def get_bridge(notebook_id: Any) -> KernelBridge:
    """This process's bridge for the notebook (created on first use; no kernel yet)."""
    key = str(notebook_id)
    bridge = BRIDGES.get(key)
    if bridge is None:
        bridge = BRIDGES[key] = KernelBridge(key)
    return bridge


def cell_source(doc: Doc, cell_id: str) -> str | None:
    """The source of the cell with this id, or None if there is no such code cell."""
    for cell in doc.get("cells", type=Array):
        if isinstance(cell, Map) and cell.get("id") == cell_id:
            if cell.get("cell_type") != "code":
                return None
            return str(cell.get("source", ""))
    return None


def execution_states(doc: Doc) -> list[tuple[str, str]]:
    """(cell id, `execution_state`) of the code cells that have one."""
    cells = doc.get("cells", type=Array)
    return [
        (str(c.get("id")), str(c.get("execution_state")))
        for c in cells
        if isinstance(c, Map) and c.get("execution_state") is not None
    ]


def load_user(user_id: int | None) -> Any:
    from accounts.models import User

    return User.objects.filter(pk=user_id).first() if user_id is not None else None


def died_message(sandboxed: bool) -> str:
    """A run's error when its kernel died: on the deployment's own server, name the sandbox's
    limits (a kernel over its CPU time is killed; one over its memory usually just fails)."""
    text = "The kernel died while this cell was running."
    if sandboxed and settings.KERNEL_SANDBOX != "off":
        text += (
            " It may have gone past this site's limits for a kernel:"
            f" {settings.KERNEL_MEMORY_MB} MB of memory, {settings.KERNEL_CPU_SECONDS} s of CPU time,"
            f" {settings.KERNEL_MAX_PROCESSES} processes. Run it again to start a new kernel."
        )
    return text


def connection_lost_message(exc: Exception, sandboxed: bool) -> tuple[str, str]:
    """(the running cell's error, the kernel status message) when the kernel's connection ended
    for good: its server stopped answering (stopped, killed), or the kernel is gone from a
    server that answers (e.g. one restarted since)."""
    if isinstance(exc, KernelGone):
        return (
            "The kernel is gone from its kernel server (stopped, or the server was restarted) while"
            " this cell was running. Run it again to start a new kernel.",
            "The kernel is gone from its kernel server; the next run starts a new one.",
        )
    if isinstance(exc, KernelServerError):
        return (
            "The kernel server stopped answering while this cell was running, and its kernel is"
            " lost. Run it again to start a new kernel once the server is back.",
            "The kernel server stopped answering; the next run starts a new kernel once it is back.",
        )
    return died_message(sandboxed), "The kernel is gone; the next run starts a new one."


NOT_REACHED = "Not run: the kernel server was lost before this cell's turn. Run it again."


@dataclass
class Job:
    cell_id: str
    user: Any
    request_meta: dict[str, Any]
    who: str = ""  # principal key ("u:<pk>", "g:<guest>") of the person who ran it
    msg_id: str = ""
    code: str = ""
    started: float = 0.0
    done: asyncio.Future | None = None
    outcome: str = ""
    execution_count: int | None = None

    def record(self) -> dict[str, Any]:
        """What the lease row keeps of a run in flight (`leases.Remembered.running`)."""
        return {
            "msg_id": self.msg_id,
            "cell_id": self.cell_id,
            "user_id": getattr(self.user, "pk", None),
            "who": self.who,
            "code": self.code,
        }


@dataclass
class PendingInput:
    """An `input()` the kernel waits on, for the person who ran the cell."""

    msg_id: str
    cell_id: str
    prompt: str
    password: bool
    for_user: str
    timer: asyncio.TimerHandle | None = None

    def public(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "prompt": self.prompt,
            "password": self.password,
            "for_user": self.for_user,
        }


class InputRefused(Exception):
    """`answer_input` was refused: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def principal_key(user: Any) -> str:
    pk = getattr(user, "pk", None)
    return f"u:{pk}" if pk is not None else ""


@dataclass
class _Batch:
    events: list[tuple[str, Output]] = field(default_factory=list)
    handle: asyncio.TimerHandle | None = None
    flushed_at: float = 0.0  # loop time of the last flush


class KernelBridge:
    """See the module rules."""

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

    # public API ------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The KERNEL frame payload (also the status endpoint's JSON)."""
        return {
            "status": self.status,
            "queue": [job.cell_id for job in self.queue],
            "running": self.running.cell_id if self.running else None,
            "message": self.message,
            "input": self.input.public() if self.input else None,
        }

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
        return await _detached(self._enqueue(cell_ids, user, request_meta, key))

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
            await room.edit(lambda doc: self._mark(queued, "queued"), user_id=uid, within=MARK_WRITE_DELAY)
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

    async def interrupt(self, user: Any = None, request_meta: dict[str, Any] | None = None) -> None:
        await _detached(self._interrupt(user, request_meta))

    async def _interrupt(self, user: Any, request_meta: dict[str, Any] | None) -> None:
        if self.channels is None:
            return
        self._drop_input()
        await self.channels.interrupt()
        self._audit("kernel.interrupted", user, request_meta)

    async def restart(self, user: Any = None, request_meta: dict[str, Any] | None = None) -> None:
        """Restart the kernel: the running cell fails, the queue is cleared."""
        await _detached(self._restart(user, request_meta))

    async def _restart(self, user: Any, request_meta: dict[str, Any] | None) -> None:
        if self.channels is None:
            return
        self.status = "restarting"
        self._drop_input()
        await self._broadcast()
        lost = await self.channels.restart()
        if lost is not None:
            await self._lost(lost, "The kernel was restarted while this cell was running.")
        else:
            await self._drop_queue()
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
        await _detached(self._shutdown(user, request_meta, message, keep_kernel))

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
                await _settle([task], self.notebook_id)
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
            await _settle(list(self._background), self.notebook_id)
        if self.room is not None:
            self.room.release()
            self.room = None

    # the room ------------------------------------------------------------------------------

    async def _ensure_room(self) -> Room:
        if self.room is not None and self.room.closing:  # replaced/failed: hold the new one
            self.room.release()
            self.room = None
        if self.room is None:
            room = await get_room(self.notebook_id)
            room.hold()
            self.room, self.writer = room, OutputWriter(room.doc)
        return self.room

    async def _edit(self, change, user_id: Any = None, within: float | None = None) -> None:
        room = await self._ensure_room()
        await room.edit(lambda doc: change(doc), user_id=user_id, within=within)

    def _mark(self, cell_ids: list[str], state: str) -> None:
        assert self.writer is not None
        for cell_id in cell_ids:
            self.writer.set_execution_state(cell_id, state)

    def _fail_cell(self, cell_id: str, message: str) -> None:
        assert self.writer is not None
        self.writer.fail(cell_id, message)
        self.writer.set_execution_state(cell_id, "idle")

    async def _broadcast(self) -> None:
        payload = self.info()
        if self.room is not None and not self.room.closing:
            await self.room.set_kernel_state(payload)
        else:
            await fanout().publish({"type": "kernel", "notebook": self.notebook_id, "payload": payload})

    # the kernel ----------------------------------------------------------------------------

    async def _ensure_kernel(self, job: Job) -> None:
        async with self._start_lock:
            if self.channels is None:
                await self._connect(job)

    async def _connect(self, job: Job | None) -> Job | None:
        """Open the notebook's kernel: the one a dead worker left behind (see `_reconnect`)
        or, for a run (`job`), a new one. Returns the run taken over, if any."""
        conn = await database_sync_to_async(servers.connection_for)(self.notebook_id)
        if not conn.url:
            raise KernelServerError("No Jupyter Server is configured (JUPYTER_SERVER_URL).")
        if conn.refused:
            raise KernelServerError(conn.refused)
        self.status = "starting"
        await self._broadcast()
        self.client = servers.client(conn)
        self._on_default_server = conn.server_id is None
        previous = await database_sync_to_async(leases.remembered)(self.notebook_id)
        resumed = None
        if previous is not None and previous.server_url == self.client.base_url:
            resumed = await self._reconnect(previous)
        if self.channels is None and job is not None:
            model = await self.client.start_kernel(conn.kernelspec or None, str(self.notebook_id))
            self.kernel_id = str(model["id"])
            self.channels = self.client.channels(self.kernel_id)
            self.session_id = self.channels.session_id
            await self.channels.open()
            self._audit("kernel.started", job.user, job.request_meta, kernel_name=model.get("name", ""))
        if self.channels is not None:
            self._reader = asyncio.create_task(self._read(), name=f"kernel-reader-{self.notebook_id}")
            self.status = "idle"
            self._remember(resumed.record() if resumed else None)
        else:
            await self.client.aclose()
            self.client = None
            self.status = "not started"
        await self._clear_stale_states(resumed, job)
        return resumed

    async def _reconnect(self, previous: leases.Remembered) -> Job | None:
        """Drive the kernel a dead worker left behind (same session id: the Jupyter Server
        replays what it buffered since). Returns the run it left in flight, now ours."""
        assert self.client is not None
        model = await self.client.get_kernel(previous.kernel_id)
        if model is None:
            return None
        self.kernel_id, self.session_id = previous.kernel_id, previous.session_id
        self.channels = self.client.channels(self.kernel_id, self.session_id or None)
        try:
            await self.channels.open()
        except KernelServerError:
            self.channels = None
            self.kernel_id = self.session_id = None
            return None
        self._audit("kernel.reconnected", None, None, kernel_name=model.get("name", ""))
        run = previous.running or {}
        if not run.get("msg_id"):
            return None
        self._cells[str(run["msg_id"])] = str(run["cell_id"])  # buffered output lands in its cell
        self.channels.tracker.expect_outputs(str(run["msg_id"]))
        # Resumed whatever the server says of the kernel's state (it may lag): the server
        # replays the run's end if it came while no worker listened; `_settle_resumed` tells
        # a run whose end really went to the dead worker.
        user = await database_sync_to_async(load_user)(run.get("user_id"))
        job = Job(str(run["cell_id"]), user, {}, str(run.get("who", "")), msg_id=str(run["msg_id"]))
        job.code = str(run.get("code", ""))
        job.started = time.monotonic()
        job.done = asyncio.get_running_loop().create_future()
        self.channels.tracker.track(job.msg_id)
        self._jobs[job.msg_id] = job
        self._cells[job.msg_id] = job.cell_id
        self._spawn(self._settle_resumed(job, self.channels))
        return job

    async def _settle_resumed(self, job: Job, channels: KernelChannels) -> None:
        """The kernel answers the probe sent on reconnecting only after the run it was busy
        with (shell requests are handled in order), and the replayed end of that run comes
        before the answer. So a resumed run still unfinished once the probe is answered ended
        while the dead worker listened: say so in its cell, unless that worker saved its end."""
        await channels.iopub_answered.wait()
        if self.channels is not channels or self._jobs.get(job.msg_id) is not job:
            return
        del self._jobs[job.msg_id]
        room = await self._ensure_room()
        if dict(execution_states(room.doc)).get(job.cell_id) != "running":
            self._finish(job, "ok")  # the dead worker wrote its end: nothing was lost
            return
        message = "The server process running this cell stopped before its end was saved; run it again."
        await self._edit(lambda doc: self._fail_cell(job.cell_id, message))
        self._finish(job, "lost")

    async def adopt(self) -> bool:
        """Take over the kernel of a worker that died holding this notebook's lease (the
        cluster calls this once it holds the expired lease). False: that kernel is gone."""
        return await _detached(self._adopt())

    async def _adopt(self) -> bool:
        async with self._start_lock:
            if self.channels is not None:
                return True
            resumed = await self._connect(None)
        if resumed is not None and (self._driver is None or self._driver.done()):
            self.running = resumed
            self._idle.clear()
            self._driver = asyncio.create_task(self._drive(resumed), name=f"kernel-bridge-{self.notebook_id}")
        await self._broadcast()
        if self.channels is None:
            self._spawn(database_sync_to_async(leases.remember)(self.notebook_id))
        return self.channels is not None

    def _remember(self, running: dict[str, Any] | None = None) -> None:
        """Keep the kernel (and the run in flight) on the lease row, for whoever takes over."""
        url = self.client.base_url if self.client is not None else ""
        args = (url, self.kernel_id or "", self.session_id or "", running)
        self._spawn(database_sync_to_async(leases.remember)(self.notebook_id, *args))

    async def _clear_stale_states(self, resumed: Job | None, job: Job | None) -> None:
        """Cells left "queued"/"running" by a worker that died are idle again (a running one
        says why); the run this bridge took over keeps its state."""
        room = await self._ensure_room()
        ours = {j.cell_id for j in (*self.queue, resumed, job) if j is not None}
        stale = [(cid, st) for cid, st in execution_states(room.doc) if st != "idle" and cid not in ours]
        if not stale:
            return

        def clear(doc: Doc) -> None:
            for cell_id, state in stale:
                if state == "running":
                    self._fail_cell(cell_id, "The server process running this cell stopped; run it again.")
                else:
                    self._mark([cell_id], "idle")

        await self._edit(clear)

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
                self.message = f"Could not run: {_reason(exc)}"
                if self.channels is None:  # not "starting" forever
                    self.status = "not started"
                with contextlib.suppress(Exception):
                    await self._edit(lambda doc, cid=job.cell_id: self._fail_cell(cid, CELL_NOT_RUN))
                self._finish(job, "error")
                await self._drop_queue()
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

        await self._edit(start, uid, within=MARK_WRITE_DELAY)
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
                self._batch.events.append((cell_id, event))
                if self._batch.handle is None:
                    # The first output after a quiet spell goes out at once (a quick cell's
                    # answer should not wait); a burst is then written every FLUSH_INTERVAL.
                    loop = asyncio.get_running_loop()
                    delay = max(0.0, self._batch.flushed_at + FLUSH_INTERVAL - loop.time())
                    self._batch.handle = loop.call_later(delay, lambda: self._spawn(self._flush()))
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
            await self._broadcast()
        elif isinstance(event, KernelLost):
            await self._lost(event, died_message(self._on_default_server))

    async def _flush(self) -> None:
        """Write the collected outputs into the document in one edit."""
        if self._batch.handle is not None:
            self._batch.handle.cancel()
            self._batch.handle = None
        events, self._batch.events = self._batch.events, []
        if not events:
            return
        self._batch.flushed_at = asyncio.get_running_loop().time()

        def apply(doc: Doc) -> None:
            assert self.writer is not None
            for cell_id, event in events:
                self.writer.apply(cell_id, event.msg)

        await self._edit(apply, within=0)  # someone is waiting for this

    async def _lost(self, lost: KernelLost, message: str) -> None:
        self._drop_input()
        await self._flush()
        for msg_id in lost.msg_ids:
            job = self._jobs.pop(msg_id, None)
            if job is not None:
                await self._edit(lambda doc, cid=job.cell_id, text=message: self._fail_cell(cid, text))
                self._finish(job, "lost")
        await self._drop_queue()

    async def _drop_queue(self) -> None:
        dropped = [job.cell_id for job in self.queue]
        self.queue.clear()
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

    # input() --------------------------------------------------------------------------------

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

    async def answer_input(self, value: str, who: str) -> None:
        """Send `value` as the answer to the pending `input()`; only the person who ran the cell
        may answer. Raises `InputRefused`."""
        await _detached(self._answer_input(value, who))

    async def _answer_input(self, value: str, who: str) -> None:
        pending = self.input
        if pending is None or self.channels is None:
            raise InputRefused(409, "No cell is waiting for input.")
        if not who or who != pending.for_user:
            raise InputRefused(403, "Only the person who ran this cell can answer its input().")
        self._drop_input()
        await self.channels.send_input_reply(value)
        shown = "·" * 8 if pending.password else value
        await self._echo(pending.cell_id, "stdout", f"{pending.prompt}{shown}\n")
        await self._broadcast()

    async def _on_input_request(self, event: InputRequested) -> None:
        job = self._jobs.get(event.msg_id)
        if job is None:
            return
        await self._flush()  # what was printed before the prompt comes first
        self._drop_input()
        pending = PendingInput(event.msg_id, job.cell_id, event.prompt, event.password, job.who)
        timeout = settings.KERNEL_INPUT_TIMEOUT
        pending.timer = asyncio.get_running_loop().call_later(
            timeout, lambda: self._spawn(self._input_timed_out(pending))
        )
        self.input = pending
        await self._broadcast()

    async def _input_timed_out(self, pending: PendingInput) -> None:
        if self.input is not pending:
            return
        self._drop_input()
        seconds = settings.KERNEL_INPUT_TIMEOUT
        text = (
            f"No answer to input() within {seconds:g} seconds from the person who ran this cell; "
            "the kernel was interrupted.\n"
        )
        await self._echo(pending.cell_id, "stderr", text)
        await self._broadcast()
        if self.channels is not None:
            await self.channels.interrupt()

    def _drop_input(self) -> None:
        if self.input is not None and self.input.timer is not None:
            self.input.timer.cancel()
        self.input = None

    async def _echo(self, cell_id: str, name: str, text: str) -> None:
        """A stream output written by the bridge itself (the answer to a prompt, a notice)."""
        await self._flush()
        msg = {"header": {"msg_type": "stream"}, "content": {"name": name, "text": text}}

        def apply(doc: Doc) -> None:
            assert self.writer is not None
            self.writer.apply(cell_id, msg)

        await self._edit(apply)

    # idle shutdown --------------------------------------------------------------------------

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
        task.add_done_callback(_log_failure)

    # audit ---------------------------------------------------------------------------------

    def _audit(self, action: str, user: Any, request_meta: dict[str, Any] | None, **details: Any) -> None:
        """Write an audit event in a thread, without making anyone wait for it."""
        self._spawn(
            database_sync_to_async(_write_audit)(action, self.notebook_id, user, request_meta or {}, details)
        )

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


SHUTDOWN_GRACE = 10.0  # seconds a shutdown waits for the bridge's own tasks before cancelling them


async def _settle(tasks: list[asyncio.Task], notebook_id: Any) -> None:
    """Wait for the tasks to end, at most SHUTDOWN_GRACE seconds; cancel what is left (once, with
    a log line), so a shutdown can never hang on a task that waits for something that is gone."""
    _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
    if pending:
        log.warning(
            "kernel bridge of %s: %d task(s) still running at shutdown; cancelled", notebook_id, len(pending)
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)


def _reason(exc: Exception) -> str:
    """Why a run failed, for the people who may run (the kernel status): a `KernelServerError`
    is one of a fixed set of sentences; anything else may hold what a server sent, so it is
    only logged."""
    if isinstance(exc, KernelServerError):
        return str(exc)
    return "the kernel server's reply could not be used."


async def _detached(coro: Any) -> Any:
    """Run `coro` in a fresh context (see the module rules) and wait for it."""
    return await asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("kernel bridge background task failed", exc_info=task.exception())


def _write_audit(
    action: str, notebook_id: str, user: Any, meta: dict[str, Any], details: dict[str, Any]
) -> None:
    from audit import log as audit
    from notebooks.models import Notebook

    notebook = Notebook.objects.filter(pk=notebook_id).first()
    event = audit.build(action, notebook=notebook or notebook_id, actor=user, **details)
    event.ip = meta.get("ip")
    event.user_agent = str(meta.get("user_agent", ""))[:300]
    event.save()


def request_meta(request: Any) -> dict[str, Any]:
    """What the audit log keeps of an HTTP request (IP address, user agent)."""
    from audit.log import client_info

    return client_info(request)
