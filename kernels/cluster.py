"""Exactly one worker process drives a notebook's kernel, however many daphne workers there are.

Design: a lease row per notebook (`KernelLease`) in the database every worker already shares
names the worker whose bridge (`kernels.bridge`) drives the kernel. A worker is named by its own
channel-layer channel (`kernels.…`), so another worker that receives a kernel request sends it
straight to the holder (`layer.send`) and waits for the answer on its own channel. A database
lease rather than a Redis lock because the database is the one thing every deployment has (one
worker with the in-memory layer needs no Redis), claiming is one conditional UPDATE/INSERT on
SQLite and PostgreSQL alike, and the holder is visible to anyone reading the table.

Rules:
- `call(notebook, op, args, who)` is the only entry point (the views): ops `run`, `interrupt`,
  `restart`, `shutdown`, `status`, `input`. Access is checked by the caller, on the worker that
  received the HTTP request; the holder checks only what it alone knows (who may answer an
  `input()`).
- Only `run` claims a lease (or any op on a worker that already has a bridge for the notebook).
  Every other op goes to the holder, or is answered "not started" when nobody holds one.
- The holder renews its leases every `KERNEL_LEASE_RENEW` seconds. A lease not renewed for
  `KERNEL_LEASE_TTL` seconds (its worker was killed or hangs) is taken over: by the first
  worker whose sweep (every `KERNEL_LEASE_RENEW` seconds, on every worker that has started its
  node: any that has served a request, see `config.asgi`) finds it, or by the worker receiving
  the next run. The lease row names the kernel and the run in flight (`kernels.leases`), so the
  new holder reconnects to that kernel with its session id (variables kept, buffered output
  replayed into the running cell) instead of orphaning it on the Jupyter Server.
- A holder that finds at renewal that its lease went to another worker lets go of its bridge
  (the kernel stays, the new holder drives it); a lease whose bridge is gone (shut down, idle)
  is deleted at the next renewal.
- While the holder has not answered within `KERNEL_FORWARD_TIMEOUT` seconds (handing the request
  to the channel layer included) the request fails with 503; it is never run twice.
- Messages are plain dicts of str/int/bool/None/list (msgpack-safe for channels-redis).
- Runs in the event loop; never blocks: the ORM through `database_sync_to_async`; the tasks it
  starts run in a fresh context (see `kernels.jobs.detached`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from typing import Any, Literal, TypedDict

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from collab.rooms import RoomError
from config.failures import FailureLog
from kernels import assist, leases
from kernels.assist import NO_KERNEL_TO_ASK
from kernels.bridge import BRIDGES, InputRefused, get_bridge, load_user

log = logging.getLogger(__name__)

READ_RETRY_INTERVAL = 0.5  # seconds between attempts to reach the channel layer while it is down

Op = Literal["run", "interrupt", "restart", "shutdown", "status", "input", "complete", "inspect"]


class Who(TypedDict):
    """The person asking, as far as the driving worker needs to know."""

    user_id: int | None
    key: str  # principal key: "u:<pk>" or "g:<guest key>"
    meta: dict[str, Any]  # audit: ip, user_agent


class Reply(TypedDict, total=False):
    status: int  # HTTP status for the view
    body: dict[str, Any]
    retry: bool  # the addressee no longer holds the lease: look it up again


class RequestEvent(TypedDict):
    type: Literal["kernel.request"]
    id: str
    reply_to: str
    notebook: str
    op: str
    args: dict[str, Any]
    who: Who


class ReplyEvent(TypedDict):
    type: Literal["kernel.reply"]
    id: str
    reply: Reply


def invalid_args(op: str, args: Any) -> str | None:
    """Why a request's arguments are unusable, or None; shared by the HTTP views and the
    websocket command path."""
    if op == "run":
        cell_ids = args.get("cell_ids") if isinstance(args, dict) else None
        if (
            not isinstance(cell_ids, list)
            or not all(isinstance(c, str) for c in cell_ids)
            or len(cell_ids) > settings.KERNEL_MAX_CELLS_PER_RUN
        ):
            return 'Send {"cell_ids": [...]}, a list of cell id strings.'
    elif op == "input":
        value = args.get("value") if isinstance(args, dict) else None
        if not isinstance(value, str) or len(value) > settings.KERNEL_MAX_INPUT_CHARS:
            return 'Send {"value": "..."}.'
    elif op in assist.OPS:
        return assist.invalid_args(args)
    elif op not in ("interrupt", "restart", "shutdown", "status"):
        return f"Unknown kernel operation {op!r}."
    return None


def not_started() -> dict[str, Any]:
    return {"status": "not started", "queue": [], "running": None, "message": "", "input": None}


# this worker --------------------------------------------------------------------------------


class Node:
    """This process's end of the cluster: its channel, its leases, the requests it waits on."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.loop = asyncio.get_running_loop()
        self.channel = ""
        self.held: dict[str, float] = {}  # notebook id -> when (monotonic) our lease runs out
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._reader: asyncio.Task | None = None
        self._renewer: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        if self.channel:  # started: the common case, on every HTTP request (config.asgi)
            return
        async with self._start_lock:
            if not self.channel:
                # A plain name, not `new_channel()`: channels-redis reads every "!" channel of a
                # process through one shared receive loop, and a second reader beside the
                # fan-out's stalled both (0.45 s per relayed update, at times 5 s).
                self.channel = f"kernels.{uuid.uuid4().hex}"
                self._reader = self._task(self._read(), "kernel-cluster-reader")
                self._task(self._sweep_forever(), "kernel-cluster-sweeper")

    def holds(self, notebook_id: str) -> bool:
        return self.held.get(notebook_id, 0.0) > time.monotonic()

    async def call(self, notebook_id: str, op: Op, args: dict[str, Any], who: Who, user: Any = None) -> Reply:
        await self.start()
        for _attempt in range(3):
            if self.holds(notebook_id):
                return await self.handle(notebook_id, op, args, who, user)
            started = time.monotonic()
            # A bridge here without a lease (started directly, as tests do) adopts one.
            acquire = op == "run" or notebook_id in BRIDGES
            holder = await database_sync_to_async(leases.claim)(notebook_id, self.channel, acquire)
            if holder is None:
                return _nobody(op)
            if holder == self.channel:
                self._hold(notebook_id, started)
                return await self.handle(notebook_id, op, args, who, user)
            reply = await self.forward(holder, notebook_id, op, args, who)
            if not reply.get("retry"):
                return reply
        return _busy()

    def _hold(self, notebook_id: str, claimed_at: float) -> None:
        self.held[notebook_id] = claimed_at + settings.KERNEL_LEASE_TTL
        if self._renewer is None or self._renewer.done():
            self._renewer = self._task(self._renew_forever(), "kernel-cluster-renewer")

    async def sweep(self) -> None:
        """Take over the kernels of workers that died: their leases ran out while naming a
        kernel. The new bridge reconnects to the kernel and goes on with its run in flight."""
        for notebook_id in await database_sync_to_async(leases.orphaned)():
            started = time.monotonic()
            holder = await database_sync_to_async(leases.claim)(notebook_id, self.channel, True)
            if holder != self.channel:
                continue
            self._hold(notebook_id, started)
            log.warning("taking over the kernel of %s from a worker that stopped", notebook_id)
            bridge = get_bridge(notebook_id)
            if not await bridge.adopt():
                await bridge.shutdown()
                await self.drop(notebook_id)

    async def _sweep_forever(self) -> None:
        await self._every_renewal(self.sweep, "orphan-kernel sweep")

    async def _every_renewal(self, action, what: str) -> None:
        """`action` every KERNEL_LEASE_RENEW seconds. A failure (the database away) is one line,
        naming the error, when it starts failing and one when it works again: not a traceback
        every few seconds through an outage, on every worker."""
        failures = FailureLog(log, f"kernel cluster: {what}")
        while True:
            interval = settings.KERNEL_LEASE_RENEW
            await asyncio.sleep(interval)
            try:
                await action()
            except Exception as exc:
                failures.failed(exc, f"retrying every {interval:g} s")
            else:
                failures.worked()

    async def forward(self, holder: str, notebook_id: str, op: str, args: dict[str, Any], who: Who) -> Reply:
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Reply] = self.loop.create_future()
        self._waiting[request_id] = future
        event: RequestEvent = {
            "type": "kernel.request",
            "id": request_id,
            "reply_to": self.channel,
            "notebook": notebook_id,
            "op": op,
            "args": args,
            "who": who,
        }
        sent = False
        try:
            # Handing it over counts too: a stopped Redis holds a send for its socket timeout (30 s).
            async with asyncio.timeout(settings.KERNEL_FORWARD_TIMEOUT):
                await self.layer.send(holder, event)
                sent = True
                return await future
        except TimeoutError:
            if not sent:
                log.warning(
                    "the channel layer did not take a request for notebook %s's kernel in time", notebook_id
                )
            return _busy()
        except Exception as e:  # the channel layer (Redis) cannot be reached: the same answer
            log.warning("could not ask the worker running notebook %s's kernel: %r", notebook_id, e)
            return _busy()
        finally:
            self._waiting.pop(request_id, None)

    async def handle(
        self, notebook_id: str, op: str, args: dict[str, Any], who: Who, user: Any = None
    ) -> Reply:
        """Do `op` here, where the kernel is driven."""
        try:
            if op == "run":
                bridge = get_bridge(notebook_id)  # before any await: the renewer keeps the lease
                if user is None:
                    user = await database_sync_to_async(load_user)(who["user_id"])
                queued = await bridge.enqueue(list(args["cell_ids"]), user, who["meta"], who=who["key"])
                return {"status": 202, "body": {"queued": queued}}
            bridge = BRIDGES.get(notebook_id)
            if bridge is None:
                return _nobody(op)
            if op in assist.OPS:
                return {"status": 200, "body": await bridge.assist(op, args)}
            if op == "input":
                await bridge.answer_input(str(args["value"]), who["key"])
            elif op in ("interrupt", "restart", "shutdown"):
                if user is None:
                    user = await database_sync_to_async(load_user)(who["user_id"])
                await getattr(bridge, op)(user, who["meta"])
                if op == "shutdown":
                    await self.drop(notebook_id)
                    return {"status": 200, "body": not_started()}
            return {"status": 200, "body": bridge.info()}
        except InputRefused as exc:
            return {"status": exc.status, "body": {"error": exc.message}}
        except RoomError as exc:
            return {"status": 404, "body": {"error": exc.reason}}

    async def drop(self, notebook_id: str) -> None:
        """Give the lease up (the bridge was shut down here)."""
        if self.held.pop(notebook_id, None) is not None:
            await database_sync_to_async(leases.release)(self.channel, notebook_id)

    async def renew_now(self) -> None:
        gone = [nb for nb in self.held if nb not in BRIDGES]
        for nb in gone:
            del self.held[nb]
        keep = list(self.held)
        if not keep and not gone:
            return
        started = time.monotonic()
        still = await database_sync_to_async(leases.renew)(self.channel, keep, gone)
        for nb in keep:
            if nb in still:
                if nb in self.held:
                    self.held[nb] = started + settings.KERNEL_LEASE_TTL
                continue
            self.held.pop(nb, None)
            bridge = BRIDGES.get(nb)
            if bridge is not None:
                log.warning("lost the kernel lease of %s to another worker; shutting down here", nb)
                await bridge.shutdown(
                    message="Another server process drives this kernel now.", keep_kernel=True
                )

    async def _renew_forever(self) -> None:
        await self._every_renewal(self.renew_now, "renewing kernel leases")

    async def _read(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis is down: one line now, one when it answers again
                log.warning(
                    "kernel cluster: receiving failed (%r); retrying until the channel layer answers", exc
                )
                await self._until_layer_answers()
                log.warning("kernel cluster: receiving restored")
                continue
            if event.get("type") == "kernel.reply":
                future = self._waiting.get(event.get("id", ""))
                if future is not None and not future.done():
                    future.set_result(event["reply"])
            elif event.get("type") == "kernel.request":
                self._task(self._answer(event), "kernel-cluster-request")

    async def _until_layer_answers(self) -> None:
        """Retry every `READ_RETRY_INTERVAL` s until the layer takes a message for this worker's
        own channel (a blocked `receive` would not say when it works again); the reader skips it."""
        while True:
            await asyncio.sleep(READ_RETRY_INTERVAL)
            with contextlib.suppress(Exception):  # still down: try again
                await self.layer.send(self.channel, {"type": "kernel.layer_back"})
                return

    async def _answer(self, event: RequestEvent) -> None:
        notebook_id = event["notebook"]
        if not self.holds(notebook_id):
            reply: Reply = {"retry": True}
        else:
            try:
                reply = await self.handle(notebook_id, event["op"], event["args"], event["who"])
            except Exception:
                log.exception("kernel request %s for %s failed", event["op"], notebook_id)
                reply = {"status": 500, "body": {"error": "The kernel request failed on the server."}}
        answer: ReplyEvent = {"type": "kernel.reply", "id": event["id"], "reply": reply}
        await self.layer.send(event["reply_to"], answer)

    def _task(self, coro: Any, name: str) -> asyncio.Task:
        task = self.loop.create_task(coro, name=name, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel this node's tasks (tests)."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _nobody(op: str) -> Reply:
    if op == "input":
        return {"status": 409, "body": {"error": "No cell is waiting for input."}}
    if op in assist.OPS:
        return {"status": 409, "body": {"error": NO_KERNEL_TO_ASK}}
    return {"status": 200, "body": not_started()}


def _busy() -> Reply:
    message = "The server process running this notebook's kernel did not answer; try again in a few seconds."
    return {"status": 503, "body": {"error": message}}


_node: Node | None = None


def node() -> Node:
    """This process's node (a new one for a new channel layer or event loop, as in tests)."""
    global _node
    if (
        _node is None
        or _node.layer is not get_channel_layer()
        or _node.loop is not asyncio.get_running_loop()
    ):
        _node = Node()
    return _node


async def call(notebook_id: Any, op: Op, args: dict[str, Any], who: Who, user: Any = None) -> Reply:
    """Do a kernel operation on the worker that drives the notebook's kernel (see the rules)."""
    return await node().call(str(notebook_id), op, args, who, user)
