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
- a room is unloaded `ROOM_UNLOAD_DELAY` seconds after its last socket (or holder) leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from pycrdt import Array, Doc, Map, merge_updates

from collab import metrics, persistence, protocol, schema
from collab.awareness import Presence
from collab.fanout import fanout
from collab.persistence import Pending

log = logging.getLogger(__name__)

ROOMS: dict[str, Room] = {}
BIG_BATCH = 64  # with this many updates waiting, write at once instead of waiting the window
_loading: dict[str, asyncio.Lock] = {}


def conf(name: str):
    return settings.COLLAB[name]


class RoomError(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Socket(Protocol):
    """What a room needs from a connected client (the consumer)."""

    client_id: int | None
    ext: bool
    may_run: bool  # receives the kernel status's message

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
    async with lock:
        room = ROOMS.get(notebook_id)
        if room is None:
            loaded = await database_sync_to_async(persistence.load)(notebook_id)
            if loaded is None:
                raise RoomError(4404, "This notebook does not exist or was deleted.")
            room = Room(notebook_id, loaded)
            await room.start()
            ROOMS[notebook_id] = room
    return room


class Room:
    def __init__(self, notebook_id: str, loaded: persistence.Loaded):
        self.id = notebook_id
        self.epoch = loaded.epoch
        self.doc = Doc()
        self.doc.apply_update(loaded.state)
        self.size = len(loaded.state)
        self._touched: set[str] = set()
        self._cells = self.doc.get("cells", type=Array)
        self._cells_subscription = self._cells.observe_deep(self._on_cells_changed)
        self._structure = schema.Touched()  # what the update being applied changed, see collab.schema
        self._meta_subscription = self.doc.get("meta", type=Map).observe_deep(self._on_meta_changed)
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
        self._aw_last: dict[Socket, float] = {}
        self._aw_pending: dict[Socket, bytes] = {}

    # lifecycle

    async def start(self) -> None:
        await fanout().subscribe(self.id, self)
        self._tasks = [
            asyncio.create_task(self._writer(), name=f"room-writer-{self.id}"),
            asyncio.create_task(self._relayer(), name=f"room-relayer-{self.id}"),
            asyncio.create_task(self._watch(), name=f"room-watch-{self.id}"),
        ]

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
        """Write what is pending, stop the tasks and forget the room."""
        if self.closing:
            await self.gone.wait()
            return
        self.closing = True
        with contextlib.suppress(Exception):
            await self.flushed()
            await asyncio.wait_for(self._committed.join(), 5)  # other workers hear of them
        self.closed = True
        self._cancel_unload()
        for task in self._tasks:
            if task is not asyncio.current_task():  # the writer closes the room on failure
                task.cancel()
        await fanout().unsubscribe(self.id, self)
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
                first = await database_sync_to_async(persistence.append)(
                    self.id, [p for p, _ in batch], self.epoch
                )
            except persistence.Replaced as exc:
                done.set_exception(exc)
                done.exception()  # mark retrieved
                await self._replaced()
                return
            except Exception as exc:
                log.exception("saving updates of %s failed; closing the room", self.id)
                done.set_exception(exc)
                done.exception()
                await self._fail()
                return
            for seq in range(first, first + len(batch)):
                self._mark(seq)
            done.set_result(None)
            self._committed.put_nowait((first, batch, durable_state))

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

    async def _fail(self) -> None:
        self._abandon_pending(RuntimeError("the room failed"))
        for socket in list(self.sockets):
            await socket.close_with(1011, "The server could not save changes; reconnecting.")
        self.sockets.clear()
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
        new = [data for seq, data in rows if seq not in self._ahead]
        metrics.inc("gap_updates_repaired", len(new))
        for data in new:
            self.doc.apply_update(data)
            self.size += len(data)
        # The rows were everything after our watermark up to `last`, read in one transaction.
        self.seq = max(self.seq, last)
        self._ahead = {seq for seq in self._ahead if seq > self.seq}
        if new:
            await self._send_local(protocol.sync_update(merge_updates(*new)))

    async def _watch(self) -> None:
        """Periodic safety net: catch up with updates whose fan-out message never came, and
        re-check access so that expiry takes effect without anyone acting."""
        interval = conf("RESYNC_INTERVAL")
        last_access_check = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                latest = await database_sync_to_async(_notebook_seq)(self.id)
                if latest is None:
                    await self.on_fanout({"type": "access", "notebook": self.id})
                elif latest > self.seq:
                    await self.repair()
                if time.monotonic() - last_access_check > conf("ACCESS_RECHECK_INTERVAL"):
                    last_access_check = time.monotonic()
                    await self._recheck_access()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("room watch of %s failed", self.id)

    def _start_compaction(self) -> None:
        if self._compacting:
            return
        self._compacting = True

        async def run() -> None:
            try:
                _, self.snapshot_seq = await database_sync_to_async(persistence.compact)(
                    self.id, conf("KEEP_RECENT_UPDATES")
                )
            except Exception:
                log.exception("compaction of %s failed", self.id)
            finally:
                self._compacting = False

        self._tasks.append(asyncio.create_task(run()))

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
        """Kernel status for everyone in the notebook, on every worker (the bridge calls this);
        its `message` (why a run failed, what the kernel server answered) only to those who may
        run (`kernel_frame`)."""
        self.kernel_state = payload
        await self._send_kernel_state(payload)
        await fanout().publish({"type": "kernel", "notebook": self.id, "payload": payload})

    async def _send_kernel_state(self, payload: dict) -> None:
        for socket in list(self.sockets):
            if socket.ext:
                await _send(socket, kernel_frame(payload, socket.may_run))

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
            await self._send_kernel_state(event["payload"])

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


def kernel_frame(payload: dict, may_run: bool) -> bytes:
    """The KERNEL frame for one socket: without the message for those who may not run."""
    return protocol.kernel(payload if may_run else {**payload, "message": ""})


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
