"""Rooms: one authoritative pycrdt Doc per notebook per worker process.

Runs in the event loop; never blocks: database work goes through `database_sync_to_async`.
Rules:
- an accepted update is applied to the Doc (which validates it), written to the database in
  the next batch, and only after that commit relayed to anyone (local sockets, other workers);
  a joiner's first sync also waits for that commit;
- `seq` is the highest sequence number up to which this Doc holds every update; numbers seen
  beyond a hole are kept in `_ahead`, and a hole is repaired from the database;
- a client's update that breaks the notebook schema is put right by a server change queued
  right behind it, so both share one batch and one relayed update (`collab.schema`);
- a room is unloaded `ROOM_UNLOAD_DELAY` seconds after its last socket (or holder) leaves;
- a failed write is retried for `PERSIST_RETRY_FOR` seconds; after that the room fails: its
  sockets are closed with 4503 (their clients still hold the edits and send them again when
  they reconnect), and the room is forgotten so that the next join loads it afresh;
- closing never hangs and always forgets the room, whatever the database or Redis do; the
  Doc's observers hold the room only weakly, so an unloaded room and its Doc are freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from pycrdt import Array, Doc, Map, merge_updates

from collab import persistence, protocol, schema
from collab.awareness import Presence
from collab.fanout import fanout
from collab.persistence import Pending

log = logging.getLogger(__name__)

ROOMS: dict[str, Room] = {}
BIG_BATCH = 64  # with this many updates waiting, write at once instead of waiting the window
_loading: dict[str, asyncio.Lock] = {}


def conf(name: str):
    return settings.COLLAB[name]


SAVE_FAILED = 4503
SAVE_FAILED_REASON = (
    "Your latest changes are not saved yet: the server cannot reach its database. Reconnecting."
)
_background: set[asyncio.Task] = set()  # tasks nobody awaits, kept until they finish


def detach(coro) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


class RoomError(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Socket(Protocol):
    """What a room needs from a connected client (the consumer)."""

    client_id: int | None
    ext: bool

    async def send_frame(self, frame: bytes) -> None: ...
    async def close_with(self, code: int, reason: str) -> None: ...
    async def recheck_access(self) -> None: ...


async def get_room(notebook_id: str) -> Room:
    room = ROOMS.get(notebook_id)
    if room is not None and room.closing:
        await room.gone.wait()  # a fresh room must not load before the old one has written all
        room = ROOMS.get(notebook_id)
    if room is not None:
        return room
    lock = _loading.setdefault(notebook_id, asyncio.Lock())
    try:
        async with lock:
            room = ROOMS.get(notebook_id)
            if room is None:
                loaded = await database_sync_to_async(persistence.load)(notebook_id)
                if loaded is None:
                    raise RoomError(4404, "This notebook does not exist or was deleted.")
                room = Room(notebook_id, loaded)
                await room.start()
                ROOMS[notebook_id] = room
    finally:
        if _loading.get(notebook_id) is lock and not lock.locked():
            del _loading[notebook_id]
    return room


def _weakly(method):
    """A callback for pycrdt that does not keep the room alive: pycrdt holds its callbacks
    in Rust, out of reach of Python's cycle collector."""
    ref = weakref.WeakMethod(method)

    def call(*args):
        bound = ref()
        if bound is not None:
            bound(*args)

    return call


class Room:
    def __init__(self, notebook_id: str, loaded: persistence.Loaded):
        self.id = notebook_id
        self.epoch = loaded.epoch
        self.doc = Doc()
        self.doc.apply_update(loaded.state)
        self.size = len(loaded.state)
        self._touched: set[str] = set()
        self._cells = self.doc.get("cells", type=Array)
        self._cells_subscription = self._cells.observe_deep(_weakly(self._on_cells_changed))
        self._structure = schema.Touched()  # what the update being applied changed, see collab.schema
        self._meta = self.doc.get("meta", type=Map)
        self._meta_subscription = self._meta.observe_deep(_weakly(self._on_meta_changed))
        self.seq = loaded.seq
        self.snapshot_seq = loaded.snapshot_seq  # as far as this room knows; for compaction
        self._ahead: set[int] = set()
        self.sockets: set[Socket] = set()
        self.holders = 0  # non-socket users of the room (the kernel bridge)
        self.presence = Presence()
        self.kernel_state: dict | None = None  # last kernel status, for joiners
        self.closing = False  # no new sockets; a joiner waits for `gone`, then loads afresh
        self.closed = False
        self.gone = asyncio.Event()
        self._pending: list[tuple[Pending, Socket | None]] = []
        self._pending_done: asyncio.Future | None = None
        self._inflight_done: asyncio.Future | None = None
        self._wake = asyncio.Event()
        self._due = 0.0  # loop time by which the waiting changes are to be written
        self._committed: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._unload_handle: asyncio.TimerHandle | None = None
        self._repair_handle: asyncio.TimerHandle | None = None
        self._compacting = False
        self._active_at = -1e9  # loop time of the last edit written or received here
        self._aw_last: dict[Socket, float] = {}
        self._aw_pending: dict[Socket, bytes] = {}

    # lifecycle

    async def start(self) -> None:
        await fanout().subscribe(self.id, self)
        for work, name in ((self._writer, "writer"), (self._relayer, "relayer"), (self._watch, "watch")):
            self._spawn(work(), f"room-{name}-{self.id}")

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        """Every background task's failure is logged once and fails the room, instead of
        leaving it half alive."""
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if task.cancelled() or task.exception() is None or self.closing:
            return
        log.error("%s failed; closing the room", task.get_name(), exc_info=task.exception())
        detach(self._fail(task.exception()))

    def add(self, socket: Socket) -> None:
        if len(self.sockets) >= conf("MAX_SOCKETS_PER_ROOM"):
            raise RoomError(4413, "This notebook has too many people connected right now.")
        self.sockets.add(socket)
        self._cancel_unload()

    async def remove(self, socket: Socket) -> None:
        self.sockets.discard(socket)
        self._aw_last.pop(socket, None)
        self._aw_pending.pop(socket, None)
        if socket.client_id is not None and socket.client_id in self.presence.states:
            await self._relay_awareness(self.presence.remove(socket.client_id))
        self._schedule_unload()

    def hold(self) -> None:
        self.holders += 1
        self._cancel_unload()

    def release(self) -> None:
        self.holders -= 1
        self._schedule_unload()

    def _cancel_unload(self) -> None:
        if self._unload_handle is not None:
            self._unload_handle.cancel()
            self._unload_handle = None

    def _schedule_unload(self) -> None:
        if not self.sockets and self.holders <= 0 and self._unload_handle is None:
            delay = conf("ROOM_UNLOAD_DELAY")
            self._unload_handle = asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self.unload())
            )

    async def unload(self) -> None:
        if self.closing or self.sockets or self.holders > 0:
            return
        await self.close()

    async def close(self) -> None:
        """Write what is pending, stop the tasks and forget the room. Never hangs: a write
        that cannot be made within `PERSIST_RETRY_FOR` fails the room's sockets instead."""
        if self.closing:
            await self.gone.wait()
            return
        self.closing = True
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flushed(), conf("PERSIST_RETRY_FOR") + 5)
                await asyncio.wait_for(self._committed.join(), 5)  # other workers hear of them
        finally:
            await self._forget()

    async def _forget(self) -> None:
        self.closed = True
        self._cancel_unload()
        if self._repair_handle is not None:
            self._repair_handle.cancel()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:  # the writer closes the room on failure
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self._cells.unobserve(self._cells_subscription)
        self._meta.unobserve(self._meta_subscription)
        try:
            await asyncio.wait_for(fanout().unsubscribe(self.id, self), 2)
        except Exception as exc:  # the channel layer is down: its groups are gone with it
            log.info("leaving the fan-out group of %s failed: %r", self.id, exc)
        if ROOMS.get(self.id) is self:
            del ROOMS[self.id]
        self.gone.set()

    # the document

    async def handle_step1(self, socket: Socket, state_vector: bytes) -> None:
        await self.flushed()  # never hand out what is not yet in the database
        await socket.send_frame(protocol.sync_step2(self.doc.get_update(state_vector)))

    def receive_update(
        self, update: bytes, socket: Socket | None, user_id=None, link_id=None
    ) -> set[str] | None:
        """Apply and queue a client's update; return the ids of the cells it touched
        (for edit attribution), or None if it was empty."""
        if update == protocol.EMPTY_UPDATE:
            return None
        if self.size + len(update) > conf("MAX_DOCUMENT_BYTES"):
            raise RoomError(4413, "The notebook has reached its maximum size; this change was not saved.")
        self._touched = set()
        self._structure = schema.Touched()
        try:
            self.doc.apply_update(update)
        except ValueError:
            raise RoomError(4400, "The server could not read an update from this client.") from None
        self.size += len(update)
        self._queue(Pending(update, user_id, link_id), socket)
        touched = self._touched
        if self._structure:
            self._keep_schema(self._structure)
        return touched

    def _on_cells_changed(self, events) -> None:
        # Runs inside pycrdt's transaction: it must only read, and must never raise (an
        # exception here would surface from apply_update after the update was applied).
        try:
            for event in events:
                self._structure.note_cells_event(event)
                if event.path:
                    cell = self._cells[event.path[0]]
                    cell_id = cell.get("id") if isinstance(cell, Map) else None
                    if cell_id:
                        self._touched.add(str(cell_id))
                else:  # cells inserted or deleted
                    for change in event.delta:
                        for cell in change.get("insert", []) or []:
                            if isinstance(cell, Map):
                                self._touched.add(str(cell.get("id", "")))
                        if "delete" in change:
                            self._touched.add("(deleted cells)")
        except Exception:
            log.exception("edit attribution failed")

    def _on_meta_changed(self, events) -> None:
        self._structure.meta = True

    def _keep_schema(self, touched: schema.Touched) -> None:
        """Put right what a client's update broke, in a server change queued right behind it."""
        found: list[str] = []
        self._change(lambda doc: found.extend(schema.put_right(doc, touched)))
        if found:
            log.warning("notebook %s: an update broke the schema, put right: %s", self.id, "; ".join(found))

    async def edit(self, change: Callable[[Doc], None], user_id=None, *, within: float | None = None) -> None:
        """A change made by the server itself (kernel outputs), saved and relayed like any other.
        `within`: how long its write may wait to share a batch with later changes (default: the
        batch window; 0: at once, e.g. output someone waits for)."""
        self._change(change, user_id, within)

    def _change(self, change: Callable[[Doc], None], user_id=None, within: float | None = None) -> None:
        # The transaction's own update: a diff against the state vector before it would also
        # carry the document's whole delete set, and would never be empty.
        updates: list[bytes] = []
        subscription = self.doc.observe(lambda event: updates.append(event.update))
        try:
            with self.doc.transaction(origin="server"):
                change(self.doc)
        finally:
            self.doc.unobserve(subscription)
        update = updates[0] if updates else b""  # one transaction, at most one update
        if update and update != protocol.EMPTY_UPDATE:
            self.size += len(update)
            self._queue(Pending(update, user_id, None), None, within)

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
            while len(self._pending) < BIG_BATCH and (delay := self._due - loop.time()) > 0:
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
            except persistence.Replaced as exc:
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
                first = await database_sync_to_async(persistence.append)(
                    self.id, [p for p, _ in batch], self.epoch
                )
            except (persistence.Replaced, LookupError):
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

    async def _relayer(self) -> None:
        """Hand committed batches to the local sockets and the other workers, in order."""
        while True:
            first, batch, durable_state = await self._committed.get()
            try:
                await self._relay(first, batch, durable_state)
            except Exception:
                log.exception("relaying updates of %s failed", self.id)
            finally:
                self._committed.task_done()

    async def _relay(
        self, first: int, batch: list[tuple[Pending, Socket | None]], durable_state: bytes
    ) -> None:
        updates = [p.data for p, _ in batch]
        merged = updates[0] if len(updates) == 1 else merge_updates(*updates)
        await self._send_local(protocol.sync_update(merged))
        senders = {s for _, s in batch if s is not None and s.ext}
        if senders:
            saved = protocol.saved(durable_state)
            for socket in senders:
                await _send(socket, saved)
        await fanout().publish(
            {"type": "updates", "notebook": self.id, "first_seq": first, "updates": updates}
        )
        backlog = first + len(batch) - 1 - self.snapshot_seq
        if backlog > conf("COMPACT_AFTER_UPDATES") + conf("KEEP_RECENT_UPDATES"):
            self._start_compaction()

    def _abandon_pending(self, exc: Exception) -> None:
        """The writer has stopped: nothing queued will be written; release its waiters."""
        self._pending.clear()
        if self._pending_done is not None and not self._pending_done.done():
            self._pending_done.set_exception(exc)
            self._pending_done.exception()  # mark retrieved

    async def _fail(self, exc: BaseException | None = None) -> None:
        """Nothing more can be saved: tell every socket (its client still holds its unsaved
        edits and sends them again on reconnecting) and forget the room."""
        self._abandon_pending(RuntimeError(f"the room failed: {exc!r}"))
        for socket in list(self.sockets):
            try:
                await socket.close_with(SAVE_FAILED, SAVE_FAILED_REASON)
            except Exception:
                log.debug("closing a socket failed", exc_info=True)
        self.sockets.clear()
        if not self.closing:
            await self.close()

    # sequence bookkeeping and repair

    def _mark(self, seq: int) -> None:
        if seq <= self.seq:
            return
        if seq == self.seq + 1:
            self.seq = seq
            while self.seq + 1 in self._ahead:
                self._ahead.remove(self.seq + 1)
                self.seq += 1
        else:
            self._ahead.add(seq)
            self._schedule_repair()

    def _schedule_repair(self) -> None:
        if self._repair_handle is None:
            self._repair_handle = asyncio.get_running_loop().call_later(
                conf("GAP_REPAIR_DELAY"), lambda: asyncio.ensure_future(self.repair())
            )

    async def repair(self) -> None:
        """Fetch from the database every update this Doc may have missed."""
        self._repair_handle = None
        if self.closed:
            return
        rows, last = await database_sync_to_async(persistence.updates_after)(self.id, self.seq)
        # Apply every row, also those numbered in `_ahead`: the first row may be a snapshot
        # that carries, under the number of one of ours, the very updates missing below it.
        # Yjs ignores what the Doc already holds; the diff is what is new.
        before = self.doc.get_state()
        for _, data in rows:
            self.doc.apply_update(data)
        new = self.doc.get_update(before) if rows else b""
        # The rows were everything after our watermark up to `last`, read in one transaction.
        self.seq = max(self.seq, last)
        self._ahead = {seq for seq in self._ahead if seq > self.seq}
        if new and new != protocol.EMPTY_UPDATE and self.doc.get_state() != before:
            self.size += len(new)
            await self._send_local(protocol.sync_update(new))

    def _should_poll(self) -> bool:
        """Ask the database for the notebook's counter only when it can matter: while the
        fan-out is down, while a gap is open, or while edits flow in a room someone uses (a
        lost last message would otherwise go unnoticed). An idle room costs no query."""
        if fanout().down or self._ahead:
            return True
        recent = asyncio.get_running_loop().time() - self._active_at < conf("RESYNC_ACTIVE_FOR")
        return recent and bool(self.sockets or self.holders)

    async def _watch(self) -> None:
        """Periodic safety net: catch up with updates whose fan-out message never came, and
        re-check access so that expiry takes effect without anyone acting. A failure is
        logged once, and once more when the check works again."""
        interval = conf("RESYNC_INTERVAL")
        last_access_check = time.monotonic()
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                if self._should_poll():
                    latest = await database_sync_to_async(_notebook_seq)(self.id)
                    if latest is None:
                        await self.on_fanout({"type": "access", "notebook": self.id})
                    elif latest > self.seq:
                        await self.repair()
                if self.sockets and time.monotonic() - last_access_check > conf("ACCESS_RECHECK_INTERVAL"):
                    last_access_check = time.monotonic()
                    await self._recheck_access()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("room watch of %s failed (%r); retrying every %s s", self.id, exc, interval)
                failing = True
            else:
                if failing:
                    log.warning("room watch of %s works again", self.id)
                failing = False

    def _start_compaction(self) -> None:
        if self._compacting:
            return
        self._compacting = True

        async def run() -> None:
            try:
                # Its own thread and connection: the writes' thread never waits for it.
                compact = database_sync_to_async(persistence.compact, thread_sensitive=False)
                _, self.snapshot_seq = await compact(self.id, conf("KEEP_RECENT_UPDATES"))
            except Exception:
                log.exception("compaction of %s failed", self.id)
            finally:
                self._compacting = False

        self._spawn(run(), f"room-compaction-{self.id}")

    # presence

    async def receive_awareness(self, socket: Socket, payload: bytes, identity: dict) -> None:
        socket.client_id, stamped = self.presence.stamp(payload, socket.client_id, identity)
        if not stamped:
            return
        now = time.monotonic()
        wait = conf("AWARENESS_MIN_INTERVAL") - (now - self._aw_last.get(socket, 0.0))
        if wait <= 0:
            self._aw_last[socket] = now
            await self._relay_awareness(stamped)
        else:
            if socket not in self._aw_pending:
                asyncio.get_running_loop().call_later(
                    wait, lambda: asyncio.ensure_future(self._flush_awareness(socket))
                )
            self._aw_pending[socket] = stamped  # only the newest state matters

    async def _flush_awareness(self, socket: Socket) -> None:
        stamped = self._aw_pending.pop(socket, None)
        if stamped and socket in self.sockets:
            self._aw_last[socket] = time.monotonic()
            await self._relay_awareness(stamped)

    async def _relay_awareness(self, payload: bytes) -> None:
        await self._send_local(protocol.awareness(payload))
        await fanout().publish({"type": "awareness", "notebook": self.id, "payload": payload})

    async def set_kernel_state(self, payload: dict) -> None:
        """Kernel status for everyone in the notebook, on every worker (the bridge calls this)."""
        self.kernel_state = payload
        await self.broadcast_ext(protocol.kernel(payload))
        await fanout().publish({"type": "kernel", "notebook": self.id, "payload": payload})

    async def send_presence(self, socket: Socket) -> None:
        full = self.presence.full()
        if full:
            await _send(socket, protocol.awareness(full))

    # events from other workers (and local notifications)

    async def on_fanout(self, event: dict) -> None:
        kind = event["type"]
        if kind == "updates":
            await self._on_remote_updates(event["first_seq"], event["updates"])
        elif kind == "awareness":
            self.presence.apply_remote(event["payload"])
            await self._send_local(protocol.awareness(event["payload"]))
        elif kind == "access":
            await self._recheck_access()
        elif kind == "replaced":
            await self._replaced()
        elif kind == "kernel":
            self.kernel_state = event["payload"]
            await self.broadcast_ext(protocol.kernel(event["payload"]))

    async def _on_remote_updates(self, first: int, updates: list[bytes]) -> None:
        fresh = []
        for seq, data in enumerate(updates, start=first):
            if seq <= self.seq or seq in self._ahead:
                continue
            self.doc.apply_update(data)
            self.size += len(data)
            fresh.append(data)
            self._mark(seq)
        if fresh:
            self._active_at = asyncio.get_running_loop().time()
            await self._send_local(
                protocol.sync_update(fresh[0] if len(fresh) == 1 else merge_updates(*fresh))
            )

    async def _recheck_access(self) -> None:
        for socket in list(self.sockets):
            await socket.recheck_access()

    async def _replaced(self) -> None:
        for socket in list(self.sockets):
            await socket.close_with(4409, "This notebook was replaced; reload to see the new version.")
        self.sockets.clear()
        self._abandon_pending(persistence.Replaced(self.id))
        await self.close()

    # sending

    async def _send_local(self, frame: bytes) -> None:
        for socket in list(self.sockets):
            await _send(socket, frame)

    async def broadcast_ext(self, frame: bytes) -> None:
        for socket in list(self.sockets):
            if socket.ext:
                await _send(socket, frame)


async def _send(socket: Socket, frame: bytes) -> None:
    try:
        await socket.send_frame(frame)
    except Exception:  # a socket that is going away must not stop the others
        log.debug("send failed", exc_info=True)


def _notebook_seq(notebook_id: str) -> int | None:
    from notebooks.models import Notebook

    return (
        Notebook.objects.filter(pk=notebook_id, deleted_at__isnull=True).values_list("seq", flat=True).first()
    )
