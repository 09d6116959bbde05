"""The bridge's connection to its kernel: start a new one for a run, or take over the kernel
(and the run in flight) that a dead worker left behind, with the same session id, so the
Jupyter Server replays what it buffered. The lease row (`kernels.leases`) remembers the kernel
and the run for whoever takes over next. Runs in the event loop.

Needs from the bridge: the run queue's `queue`, `_jobs`, `_cells`, `_finish`, `_drive`; the
output sink's `_ensure_room`, `_edit`, `_mark`, `_fail_cell`, `_broadcast`; `_read`, `_audit`,
`_spawn`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from pycrdt import Doc

from kernels import leases, servers
from kernels.jobs import (
    Job,
    detached,
    load_user,
)
from kernels.jupyter import JupyterClient, KernelChannels, KernelServerError
from notebooks.docschema import execution_states

log = logging.getLogger("kernels.bridge")


class Takeover:
    notebook_id: str
    client: JupyterClient | None
    channels: KernelChannels | None
    kernel_id: str | None
    session_id: str | None

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
        return await detached(self._adopt())

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
