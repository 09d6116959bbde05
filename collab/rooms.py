"""Rooms: one authoritative pycrdt Doc per notebook per worker process. The write pipeline is
in `collab.writes`, sequence bookkeeping and gap repair in `collab.repair`, what it sends to
its sockets (presence, kernel status) in `collab.broadcast`.

Runs in the event loop; never blocks: database work goes through `database_sync_to_async`,
the edit path's (claims, writes, catching up) through `collab.tasks.on_edit_thread`.
Rules:
- an accepted update is applied to the Doc (which validates it), written to the database in
  the next batch, and only after that commit relayed to anyone (local sockets, other workers);
  a joiner's first sync also waits for that commit;
- `seq` is the highest sequence number up to which this Doc holds every update; numbers seen
  beyond a hole are kept in `_ahead`, and a hole is repaired from the database;
- a client's update that breaks the notebook schema is put right by a server change queued
  right behind it, so both share one batch and one relayed update (`notebooks.docschema`);
- a room is unloaded `ROOM_UNLOAD_DELAY` seconds after its last socket (or holder) leaves;
- a failed write is retried for `PERSIST_RETRY_FOR` seconds; after that the room fails: its
  sockets are closed with 4503 (their clients still hold the edits and send them again when
  they reconnect), and the room is forgotten so that the next join loads it afresh;
- closing never hangs and always forgets the room, whatever the database or Redis do; the
  Doc's observers (`notebooks.docwatch`) never hold the room, so an unloaded room and its Doc
  are freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from pycrdt import Doc

from collab import metrics, protocol, yupdate
from collab.auth import UNAVAILABLE, UNAVAILABLE_REASON
from collab.awareness import OUTDATED, Presence
from collab.broadcast import RoomBroadcast, send_to
from collab.conf import conf
from collab.fanout import fanout
from collab.repair import GapRepair
from collab.socket import Socket
from collab.tasks import detach, on_edit_thread
from collab.writes import WritePipeline
from config import memory
from config.failures import FailureLog
from notebooks import access as acl
from notebooks import claims, docschema, docwatch, updatelog
from notebooks.updatelog import Pending

log = logging.getLogger(__name__)

ROOMS: dict[str, Room] = {}
_loading: dict[str, asyncio.Lock] = {}


REPLACED = (4409, "This notebook was replaced; reload to see the new version.")
RELOADING = (4503, "The server is reloading this notebook; reconnecting.")
ROOM_FULL = 4429  # the client reconnects later, as after any 4429
SAVE_FAILED = 4503
SAVE_FAILED_REASON = (
    "Your latest changes are not saved yet: the server cannot reach its database. Reconnecting."
)


# A room whose document took at least this many bytes hands the memory back to the system once
# its document is freed (`config.memory`); smaller ones are not worth a walk of every arena.
GIVE_BACK_AFTER_BYTES = 1024 * 1024


def _give_back_soon(loop: asyncio.AbstractEventLoop) -> None:
    """From a finalizer (any thread, before the object's own memory is freed): give the memory
    back in the loop's next turn."""
    with contextlib.suppress(RuntimeError):  # the loop is closed
        loop.call_soon_threadsafe(lambda: memory.give_back())


# A client update deleting more ranges than this has them checked against the document's delete
# set (some may be deleted already: a client that sends diffs); fewer count two pieces each (a
# keystroke, a cut). A socket's sync step 2, which carries every deletion, is always checked.
DELETIONS_COUNTED_AS_NEW = 32

TOO_MANY_DELETIONS = (
    "This change deletes text in too many places at once for the server to take; it was not saved. "
    "Delete in parts."
)

TOO_MANY_PIECES = (
    "The notebook holds too many separate edits for the server to keep in memory; this change was not saved."
)


# A room keeps the holders of the ids its document holds items under (every keystroke looks its
# writer up) and of its sockets' ids; of the others (ids that only showed presence, which a
# person reloading a page in a loop makes without end) at most about this many.
CLAIMS_CACHE_SLACK = 256
# How often a room releases the ids without content not used for `IDLE_CLAIM_KEEP` (at its next
# claim after this many seconds).
CLAIMS_PRUNE_EVERY = 600.0
TOO_MANY_CLAIMS = (
    4429,
    "You have this notebook open in too many places right now; close some tabs, it reconnects by itself.",
)


def count_pieces(state: bytes) -> int:
    """The pieces a whole document's state holds, read up to just past the limit (a document
    already past it takes no change that adds pieces)."""
    try:
        return yupdate.pieces(state, conf("MAX_DOCUMENT_PIECES"), whole=True)
    except ValueError:  # pycrdt read it: this module's reader is the stricter
        return 0


def _listed(found: list[str], shown: int = 10) -> str:
    """The first few of what a repair found, and how many more (one update may break 10,000
    cells: a line per cell would be megabytes of log)."""
    more = f"; and {len(found) - shown:,} more" if len(found) > shown else ""
    return "; ".join(found[:shown]) + more


class RoomError(Exception):
    """`penalty`: the sender's person is kept out of notebooks on this worker for a while
    (`collab.consumers`): their changes made the room reload for everyone."""

    def __init__(self, code: int, reason: str, penalty: bool = False):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.penalty = penalty


class WriterTaken(RoomError):
    """A client update writes under a client id another person (or a room) holds."""

    def __init__(self, client: int, penalty: bool = False):
        super().__init__(4400, "This editor sent changes the server cannot take; reload the page.", penalty)
        self.client = client


class Unclaimed(Exception):
    """A client update writes under client ids this room does not know the holder of: the
    caller claims them (`Room.claim`), then hands the update in again."""

    def __init__(self, clients: set[int]):
        super().__init__(f"client ids not claimed yet: {sorted(clients)}")
        self.clients = clients


def _load(notebook_id: str) -> tuple[updatelog.Loaded | None, int | None]:
    """The document, and a client id for the room's own changes claimed for rooms (if the
    database takes the claim: the room's changes matter more than the check)."""
    loaded = updatelog.load(notebook_id)
    if loaded is None:
        return None, None
    try:
        return loaded, claims.room_client(notebook_id)
    except DatabaseError as exc:
        log.warning("notebook %s: the room's client id not claimed in the database (%r)", notebook_id, exc)
        return loaded, None


async def get_room(notebook_id: str) -> Room:
    room = ROOMS.get(notebook_id)
    if room is not None and (room.closing or room._ending is not None):
        await room.gone.wait()  # a fresh room must not load before the old one has written all
        room = ROOMS.get(notebook_id)
    if room is not None:
        return room
    lock = _loading.setdefault(notebook_id, asyncio.Lock())
    try:
        async with lock:
            room = ROOMS.get(notebook_id)
            if room is None:
                loaded, client = await database_sync_to_async(_load)(notebook_id)
                if loaded is None:
                    raise RoomError(4404, "This notebook does not exist or was deleted.")
                # Counted beside the event loop: reading a big document takes seconds.
                loaded.pieces = await asyncio.to_thread(count_pieces, loaded.state)
                room = Room(notebook_id, loaded, client)
                await room.start()
                ROOMS[notebook_id] = room
    finally:
        if _loading.get(notebook_id) is lock and not lock.locked():
            del _loading[notebook_id]
    return room


class Room(WritePipeline, GapRepair, RoomBroadcast):
    def __init__(self, notebook_id: str, loaded: updatelog.Loaded, client_id: int | None = None):
        self.id = notebook_id
        self.epoch = loaded.epoch
        self.doc = Doc(client_id=client_id)  # claimed for rooms (`claims.room_client`)
        # Fed from the first transaction on: the load's events hand it every cell at once.
        self._docwatch = docwatch.Watch(self.doc)
        self.doc.apply_update(loaded.state)
        self.size = len(loaded.state)
        # Yjs blocks the document holds, as far as this room counts (`yupdate.pieces`).
        self.pieces = loaded.pieces
        if self.pieces is None:
            self.pieces = count_pieces(loaded.state)
        self.seq = loaded.seq
        self.snapshot_seq = loaded.snapshot_seq  # as far as this room knows; for compaction
        # Client ids rooms write their own changes under: this one's, and those of the rooms
        # other workers' updates came from (`_taken`).
        self.room_writers: set[int] = {self.doc.client_id}
        # Client id -> its holder, as the database said (`claim`); bounded (`_forget_claims`).
        self.claims: dict[int, str] = {}
        self._pruned_at = -1e9  # loop time of the last release of unused ids (`claim`)
        # Ids taken on trust while the database could not take their claim: id -> (person,
        # aliases), claimed as soon as it answers (`confirm_claims`). The room's own, if its
        # claim at load failed.
        self._unconfirmed: dict[int, tuple[str, tuple[str, ...]]] = {}
        if client_id is None:
            self._unconfirmed[self.doc.client_id] = (claims.ROOM, ())
        # The document's delete set, read when an update's deletions are checked against it
        # (`_delete_set`); None once something may have deleted more.
        self._deleted: yupdate.DeleteSet | None = None
        self._ahead: set[int] = set()
        self._early: dict[int, bytes] = {}  # updates beyond a hole that wait (`_apply_early_again`)
        self.sockets: set[Socket] = set()
        self.guests: set[Socket] = set()  # the sockets of people who came through a share link
        self.holders = 0  # non-socket users of the room (the kernel bridge)
        self.presence = Presence()
        self.kernel_state: dict | None = None  # last kernel status, for joiners
        self.closing = False  # no new sockets; a joiner waits for `gone`, then loads afresh
        self._ending: tuple[int, str] | None = None  # failing or replaced: how joiners are refused
        self.closed = False
        self.gone = asyncio.Event()
        self._pending: list[tuple[Pending, Socket | None]] = []
        self._pending_done: asyncio.Future | None = None
        self._inflight_done: asyncio.Future | None = None
        self._wake = asyncio.Event()
        self._due = 0.0  # loop time by which the waiting changes are to be written
        self._committed: asyncio.Queue = asyncio.Queue()
        self._last_publish: asyncio.Future | None = None  # the newest of `_publish_in_order`
        self._publishing: set[asyncio.Task] = set()  # its chain, cancelled when the room is forgotten
        self._publish_backlog = 0  # batches relayed here and not yet handed to the channel layer
        self._tasks: list[asyncio.Task] = []
        self._unload_handle: asyncio.TimerHandle | None = None
        self._repair_handle: asyncio.TimerHandle | None = None
        self._compacting = False
        self._compaction_failures = FailureLog(log, f"compaction of {notebook_id}")
        self._active_at = -1e9  # loop time of the last edit written or received here
        self._polled_at = -1e9  # loop time the database's counter was last asked (`_watch`)
        self._checked_seq: int | None = None  # what that counter was
        self._fetching = asyncio.Lock()  # `_fetch_stored`: one read of large batches at a time
        self._recheck_due: dict[Socket, float] = {}  # loop time each socket's access is due to be checked
        self._access_tick_at = 0.0  # loop time of the last tick that chose sockets to check (`_watch`)
        self._recheck_everyone = False  # a sharing change's re-check failed: all, at the next tick
        self._access_changed_at = -math.inf  # loop time of the last sharing change it heard of
        self.access_version = 0  # sharing changes the notebook had when the room subscribed (`start`)
        self._aw_last: dict[Socket, float] = {}
        self._aw_pending: dict[Socket, bytes] = {}
        self._outbox: list[bytes] = []  # document updates for the local sockets (`_sender`)
        self._outbox_ready = asyncio.Event()

    @property
    def ending(self) -> bool:
        """Failing, replaced or reloading: its sockets are being closed, it takes no more edits
        from them, and it is forgotten once what it holds is written."""
        return self._ending is not None

    # lifecycle

    async def start(self) -> None:
        await fanout().subscribe(self.id, self)
        await self._read_access_version()
        tasks = (
            (self._writer, "writer"),
            (self._relayer, "relayer"),
            (self._sender, "sender"),
            (self._watch, "watch"),
        )
        for work, name in tasks:
            self._spawn(work(), f"room-{name}-{self.id}")

    async def _read_access_version(self) -> None:
        """The notebook's count of sharing changes, read once the room hears of them: a join whose
        access check read a smaller one missed a change while the room loaded, and is checked
        again (`access_may_have_changed_since`); later ones reach the room as notices. Unread
        (the database is away): every socket checked before now is checked again."""
        try:
            self.access_version = await database_sync_to_async(acl.access_version)(self.id)
        except Exception as exc:
            log.warning("notebook %s: sharing changes not counted (%r); joins checked again", self.id, exc)
            self._access_changed_at = asyncio.get_running_loop().time()

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

    def add(self, socket: Socket, guest: bool = False) -> None:
        """Admit a socket. Guests (who came through a share link) share at most
        `MAX_GUEST_SOCKETS_PER_ROOM` places: every anonymous visit of a link is a new guest, so
        the per-person cap does not bound them, and the owner and grantees keep the rest. A
        full room closes with 4429: places come free, the client tries again. A room that is
        failing or was replaced refuses as it closes its own sockets: a socket admitted while
        those close would be left on a room nobody keeps."""
        if self._ending is not None:
            raise RoomError(*self._ending)
        if len(self.sockets) >= conf("MAX_SOCKETS_PER_ROOM"):
            metrics.inc("sockets_refused_room_full")
            raise RoomError(ROOM_FULL, "This notebook has too many people connected right now; retrying.")
        if guest and len(self.guests) >= conf("MAX_GUEST_SOCKETS_PER_ROOM"):
            metrics.inc("sockets_refused_room_full")
            raise RoomError(
                ROOM_FULL,
                "Too many people are connected to this notebook through share links right now; retrying.",
            )
        self.sockets.add(socket)
        if guest:
            self.guests.add(socket)
        self._cancel_unload()

    def access_may_have_changed_since(self, when: float, version: int) -> bool:
        """Whether a sharing change may have come after an access check made at loop time
        `when`, which read the notebook's `access_version` `version`: the room's re-check of
        every socket may have left out the one checked then, before it was added. A join checks
        access, then waits before it enters the room (the keep-out lookup waits up to 0.5 s
        while Redis is stopped): a grant removed meanwhile left the socket open, its edits
        saved and relayed, until its periodic re-check (17.7 s with the default interval). A
        room that loads for the join hears of nothing before it subscribes: a change made
        meanwhile shows in the version it reads once subscribed. (Re-checking every socket that
        joined a room as it loaded took a herd of 200 joins into a cold room from 3.0-3.2 s to
        4.5-5.2 s: only those behind a change are.) A notice published while Redis is away is
        left to the periodic re-check."""
        return self._access_changed_at >= when or version < self.access_version

    def discard(self, socket: Socket) -> None:
        """Give back a socket's place (synchronous: it happens even if its task is cancelled)."""
        self.sockets.discard(socket)
        self.guests.discard(socket)

    async def remove(self, socket: Socket) -> None:
        self.discard(socket)
        self._aw_last.pop(socket, None)
        self._aw_pending.pop(socket, None)
        client = socket.client_id
        if client is not None:
            # The other workers keep the id for its person as this one does (`Presence.release`).
            person = self.presence.waiting_for(client)
            leaving = self.presence.remove(client) if client in self.presence.states else None
            await self._relay_awareness(leaving, reserve=(client, person) if person is not None else None)
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

    def unload_if_unused(self) -> None:
        """For a caller that loaded the room and then did not join it (a refused join): the
        room unloads after the usual delay unless someone else joins or holds it."""
        self._schedule_unload()

    def _schedule_unload(self) -> None:
        if not self.sockets and self.holders <= 0 and self._unload_handle is None:
            delay = conf("ROOM_UNLOAD_DELAY")
            self._unload_handle = asyncio.get_running_loop().call_later(delay, lambda: detach(self.unload()))

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
            with contextlib.suppress(Exception):  # it raises after a failed write (`_fail`)
                await asyncio.wait_for(self.flushed(), conf("PERSIST_RETRY_FOR") + 5)
            with contextlib.suppress(Exception):  # what did commit: the other workers hear of it
                await asyncio.wait_for(self._committed.join(), 5)
                if self._last_publish is not None:
                    await asyncio.wait_for(asyncio.shield(self._last_publish), 5)
        finally:
            await self._forget()

    async def _forget(self) -> None:
        self.closed = True
        self._cancel_unload()
        if self._repair_handle is not None:
            self._repair_handle.cancel()
        # Batches still waiting for a layer that hangs are in the database: the other workers
        # fetch them (a gap, or their periodic check); waiting on would hold this room.
        tasks = [t for t in [*self._tasks, *self._publishing] if t is not asyncio.current_task()]
        for task in tasks:  # the writer closes the room on failure
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self._docwatch.close()
        try:
            await asyncio.wait_for(fanout().unsubscribe(self.id, self), 2)
        except Exception as exc:  # the channel layer is down: its groups are gone with it
            log.info("leaving the fan-out group of %s failed: %r", self.id, exc)
        await self._release_own_client()
        if ROOMS.get(self.id) is self:
            del ROOMS[self.id]
        if self.size >= GIVE_BACK_AFTER_BYTES:
            # glibc keeps the pages of a freed document (a worker stayed tens of MB larger after
            # a room of a few MB of one-character items closed): handed back once it is freed.
            weakref.finalize(self.doc, _give_back_soon, asyncio.get_running_loop())
        self.gone.set()

    async def _release_own_client(self) -> None:
        """Give up the claim of the id this room wrote nothing under: every load claims a new
        one, and kept, each load was a row for good. (Nobody else may write under a room's id;
        what this room did write is in its own document.)"""
        client = self.doc.client_id
        try:
            if client in self._unconfirmed or client in yupdate.state_vector(self.doc.get_state()):
                return
            release = database_sync_to_async(claims.release)(self.id, client, claims.ROOM)
            await asyncio.wait_for(release, 2)
        except BaseException as exc:  # kept: a row, no harm (a Doc pycrdt panicked on: kept too)
            if not isinstance(exc, Exception) and not yupdate.is_panic(exc):
                raise
            log.info("notebook %s: the room's client id not released (%r)", self.id, exc)

    # the document

    async def handle_step1(self, socket: Socket, state_vector: bytes) -> None:
        if self._ending is not None:
            raise RoomError(*self._ending)
        # Never hand out what is not yet in the database: the answer is what the Doc holds now,
        # sent once what was waiting to be written now is (changes arriving meanwhile reach the
        # socket as every socket gets them, after their own write).
        answer = self.doc.get_update(state_vector)
        await self.flushed()
        await socket.send_frame(protocol.sync_step2(answer))

    def receive_update(
        self,
        update: bytes,
        socket: Socket | None,
        user_id=None,
        link_id=None,
        person: str | None = None,
        aliases: tuple[str, ...] = (),
        step2: bool = False,
        confirmed: frozenset[int] = frozenset(),
    ) -> set[str] | None:
        """Apply and queue a client's update; return the ids of the cells it touched
        (for edit attribution), or None if it was empty. `person` (`Principal.key`): who sent
        it, `aliases` who else it was (`Principal.aliases`); an update writing under a client id
        another person holds is refused (`WriterTaken`). `step2`: the socket's answer to the
        room's sync step 1, which carries every deletion the client knows of. `confirmed`: ids
        the database has just said are the person's (`claim`)."""
        if update == protocol.EMPTY_UPDATE:
            return None
        if self._ending is not None:  # closing its sockets: the document takes nothing more
            raise RoomError(*self._ending)
        if self.size + len(update) > conf("MAX_DOCUMENT_BYTES"):
            raise RoomError(4413, "The notebook has reached its maximum size; this change was not saved.")
        unreadable = RoomError(4400, "The server could not read an update from this client.")
        state = self.doc.get_state()
        try:
            update = yupdate.as_read(update)  # saved and relayed as the room read it
            self._deletions_within_limit(update, step2)  # before anything else is read of it
            clocks = yupdate.state_vector(state)
            lacking, read = None, len(update) <= yupdate.CHECK_BEFORE_MAX_BYTES
            if read:
                lacking, writers = yupdate.read_before(update, clocks)
            elif (writers := yupdate.new_writers(update, clocks, conf("MAX_WRITERS_PER_SOCKET"))) is None:
                raise RoomError(4400, "This editor sent changes under more client ids than the server takes.")
        except ValueError:
            raise unreadable from None
        if lacking is not None:
            # Refused before it touches the document: only its socket is closed. (No
            # well-behaved client sends one: see `left_out` below.)
            log.info("notebook %s: a client update with %s refused", self.id, lacking)
            raise RoomError(4400, "This editor sent changes the server cannot take; reload the page.")
        self._check_writers(writers, person, aliases, socket, clocks, confirmed)
        added = self._pieces_within_limit(update, unreadable, step2)
        with self._docwatch.recording() as touched:
            try:
                self.doc.apply_update(update)
            except ValueError:
                raise unreadable from None
            except BaseException as exc:
                # e.g. an item whose parent is an item of no type (`waits` reads clocks only):
                # pycrdt raises after integrating part of the update (RuntimeError), or panics
                # (pyo3's PanicException, a BaseException: clocks past 32 bits in an update too
                # large to be read before); nothing of it is saved or relayed, so the document
                # must not go on holding that part.
                if not isinstance(exc, RuntimeError) and not yupdate.is_panic(exc):
                    raise
                log.warning("notebook %s: pycrdt failed on a client update (%r); reloading", self.id, exc)
                self.restart()
                raise RoomError(
                    4400, "This editor sent changes the server cannot take; reload the page.", penalty=True
                ) from None
        if (lacking := yupdate.left_out(update, self.doc.get_state())) is not None:
            # A large update, read only after: nothing of it is saved or relayed, and nobody
            # syncs from this document again (see `yupdate.left_out`). No well-behaved client
            # sends one (its updates wait for its sync step 2, `collab.consumers`); the editor
            # stops at 4400 and keeps its changes (and its offline copy): reloading the page
            # sends them again, in order.
            log.warning("notebook %s: a client update with %s; reloading the room", self.id, lacking)
            self.restart()
            raise RoomError(
                4400, "This editor sent changes the server cannot take; reload the page.", penalty=True
            )
        if touched.cells and len(self._docwatch.cells) > settings.NOTEBOOK_MAX_CELLS:
            # Each cell costs its schema check and its watch: refused as an import over the limit
            # is, before the check; the room reloads without it.
            log.warning(
                "notebook %s: an update would make it %s cells; reloading the room",
                self.id,
                len(self._docwatch.cells),
            )
            self.restart()
            raise RoomError(
                4413,
                f"A notebook holds at most {settings.NOTEBOOK_MAX_CELLS:,} cells; this change was not saved.",
            )
        self.size += len(update)
        self.pieces += added
        self._queue(Pending(update, user_id, link_id), socket)
        if touched:
            self._keep_schema(touched)
        return self._docwatch.edited_ids()

    def _pieces_within_limit(self, update: bytes, unreadable: RoomError, step2: bool = False) -> int:
        """The pieces a client's update adds (`yupdate.pieces`, and two for each range it deletes,
        `yupdate.deletion_pieces`), or 4413 before it is applied if they would take the document
        past `MAX_DOCUMENT_PIECES`: each costs the worker about 200 bytes however few bytes it
        took to send (one-character items typed each before the last: 28 bytes of memory per
        byte sent; every other character of a paste deleted: 71), so `MAX_DOCUMENT_BYTES` alone
        let one editor grow a worker by a GB; pycrdt also takes about 10 us of the event loop for
        each range deleted. Typing goes on from the writer's own previous item and counts
        nothing. The deletions of a sync step 2, which carries the document's whole delete set,
        count only where the document has not deleted them yet (read once per socket)."""
        limit = conf("MAX_DOCUMENT_PIECES")
        try:
            added, deletions = yupdate.pieces_and_deletions(update, max(limit - self.pieces, 0))
            deleted = None
            if deletions and (step2 or sum(map(len, deletions.values())) > DELETIONS_COUNTED_AS_NEW):
                deleted = self._delete_set()
            anew = yupdate.deletion_pieces(deletions, deleted)
            if anew:
                self._deleted = None
            added += anew
        except ValueError:
            raise unreadable from None
        if added and self.pieces + added > limit:
            log.info("notebook %s: an update would take it past %s pieces; refused", self.id, limit)
            raise RoomError(4413, TOO_MANY_PIECES)
        return added

    def _delete_set(self) -> yupdate.DeleteSet:
        """The document's delete set (its diff against its own state: the delete set alone),
        kept until something may have deleted more."""
        if self._deleted is None:
            self._deleted = yupdate.DeleteSet(
                yupdate.delete_ranges(self.doc.get_update(self.doc.get_state()))
            )
        return self._deleted

    def _deletions_within_limit(self, update: bytes, step2: bool = False) -> None:
        """4413 for a client update deleting more than `MAX_DELETE_RANGES_PER_UPDATE` separate
        ranges, read before anything else of it: one deleting every other character of a paste,
        100,000 ranges in 0.4 MB, held the event loop for seconds (reading it, then pycrdt
        applying it at about 5-10 us a range). A socket's sync step 2 (`step2`), which repeats
        the document's own deletions, counts only the ranges it deletes anew, and may repeat
        no more ranges than the document holds: reading and applying a repeated range costs
        about as much as a new one. Any other update counts every range it names: Yjs's own
        updates hold only what their transaction deleted, and an editor repeating every old
        range in each update, with one new range each, held the loop 0.3 s an update for as
        long as they liked."""
        most = conf("MAX_DELETE_RANGES_PER_UPDATE")
        if len(update) < 2 * (most + 1):
            return  # a range takes at least two bytes (its clock and length): every keystroke
        try:
            yupdate.delete_set_of(update, most)
            return
        except yupdate.TooManyRanges:
            pass
        if step2:
            deleted = self._delete_set()
            with contextlib.suppress(yupdate.TooManyRanges):
                if deleted.new_ranges(yupdate.delete_set_of(update, most + deleted.count)) <= most:
                    return
        log.info("notebook %s: an update deleting more than %s ranges refused", self.id, most)
        raise RoomError(4413, TOO_MANY_DELETIONS)

    def repeats_document(self, update: bytes, step2: bool = False) -> bool:
        """Whether a client's update brings nothing: no items, only deletions the document has
        (clients send such updates when they sync; a viewer must not be scolded for them). One
        repeating more ranges than the document holds, and a few, is not a repeat; nor is any
        but a socket's sync step 2 (`step2`) naming more than `MAX_DELETE_RANGES_PER_UPDATE`."""
        if update[:1] != b"\x00":  # it holds items
            return False
        most = conf("MAX_DELETE_RANGES_PER_UPDATE")
        deleted = self._delete_set()
        try:
            ranges = yupdate.delete_set_of(update, deleted.count + most if step2 else most)
        except ValueError:
            return False
        return deleted.new_ranges(ranges) == 0

    def _check_writers(
        self,
        writers: set[int],
        person: str | None,
        aliases: tuple[str, ...],
        socket: Socket | None,
        clocks: dict[int, int],
        confirmed: frozenset[int] = frozenset(),
    ) -> None:
        """Refuse an update writing under a client id another person or a room holds
        (`WriterTaken`), or whose holder the room does not know yet (`Unclaimed`). Yjs names an
        item by its writer's client id and clock, and a document takes nothing else under an id
        and clock it holds: one editor writing under another's next clock took that person's
        edit at that clock, saved and acknowledged, away from the room and everyone else; under
        a room's, that room's own change (a schema repair, an output) stayed out of the other
        workers' copies. Who holds an id is kept in the database (`notebooks.claims`): a worker
        that has not seen the person's presence still knows. `person` None: a server change.
        An id the document holds nothing under yet may have been released since the room heard
        of it (`notebooks.claims`) and claimed by another person on another worker: its first
        write asks the database again (`confirmed`: it has just said they are the person's).
        `clocks`: the document's state vector."""
        if person is None:
            return
        unclaimed: set[int] = set()
        for client in writers:
            holder = self.claims.get(client)
            if holder == person and (client in clocks or client in confirmed):
                continue  # every keystroke
            if holder == person or holder in aliases:
                # its first write (still theirs?), or their guest's before they signed in
                # (theirs now): asked of the database (`claim`)
                unclaimed.add(client)
                continue
            if holder is not None or client in self.room_writers or client > claims.CLIENT_MAX:
                raise WriterTaken(client)
            if socket is None or self.presence.owners.get(client) is not socket:
                other = self.presence.person_of(client)  # refused without asking the database
                if other is not None and other != person and other not in aliases:
                    raise WriterTaken(client)
            unclaimed.add(client)
        if unclaimed:
            raise Unclaimed(unclaimed)

    async def claim(self, clients: set[int], person: str, aliases: tuple[str, ...] = ()) -> dict[int, str]:
        """Claim client ids for a person in the database, remember their holders and return
        them. While the
        database cannot answer, the room takes the person's word for them (its presence check
        has passed) rather than hold their edits, and says so in its log; not for an id the
        document holds items under whose holder it does not know (4503). A person holds at
        most `MAX_IDLE_CLAIMS_PER_PERSON` ids without content in the notebook: past it their
        oldest not in use is released, and with all in use the new one is refused (4429); now
        and then the ids without content unused for `IDLE_CLAIM_KEEP` are released too."""
        clocks = yupdate.state_vector(self.doc.get_state())
        unused_before = None
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at >= CLAIMS_PRUNE_EVERY:
            self._pruned_at = now
            unused_before = timezone.now() - timedelta(seconds=conf("IDLE_CLAIM_KEEP"))
        try:
            held = await on_edit_thread(claims.claim)(
                self.id,
                clients,
                person,
                aliases,
                written=frozenset(clocks),
                in_use=self._in_use(),
                cap=conf("MAX_IDLE_CLAIMS_PER_PERSON"),
                unused_before=unused_before,
            )
        except claims.TooMany as exc:
            log.info("notebook %s: %s; refused another", self.id, exc)
            metrics.inc("claims_refused")
            raise RoomError(*TOO_MANY_CLAIMS) from None
        except Exception as exc:
            log.warning("notebook %s: client ids %s not claimed in the database (%r)", self.id, clients, exc)
            known = (person, *aliases)
            if any(client in clocks and self.claims.get(client) not in known for client in clients):
                # The document holds items under it: somebody's for good, and the room does not
                # know whose. Taken on trust, another editor wrote under an offline writer's id
                # at their next clock: stored as theirs, and their own edit at that clock lost
                # when they came back. The client sends it again once the database answers.
                raise RoomError(UNAVAILABLE, UNAVAILABLE_REASON) from None
            held = dict.fromkeys(clients, person)
            for client in clients:
                self._unconfirmed.setdefault(client, (person, tuple(aliases)))
        self.claims.update(held)
        self._forget_claims(clocks)
        return held

    def _in_use(self) -> frozenset[int]:
        """The ids a socket shows presence with: this worker's, and the others' fresh states."""
        now = time.monotonic()
        fresh = (client for client, (_, _, seen) in self.presence.states.items() if now - seen < OUTDATED)
        return frozenset(self.presence.owners).union(fresh)

    def _forget_claims(self, clocks: dict[int, int]) -> None:
        """Keep the holders of the ids the document holds items under and of this worker's
        sockets' ids; the others, once more than `CLAIMS_CACHE_SLACK`, are asked again when
        needed (`_check_writers` asks anyway before an id's first write)."""
        if len(self.claims) > len(clocks) + len(self.presence.owners) + CLAIMS_CACHE_SLACK:
            owners = self.presence.owners
            self.claims = {c: p for c, p in self.claims.items() if c in clocks or c in owners}

    async def confirm_claims(self) -> None:
        """Claim in the database the ids taken on trust (`claim`), as soon as it answers (the
        room's periodic check): kept in this room's memory alone, another worker's room that
        never saw their presence let another editor claim them and write under them at their
        holder's next clock. An id someone claimed meanwhile is theirs from here on (logged)."""
        while self._unconfirmed:
            person, aliases = next(iter(self._unconfirmed.values()))
            clients = {c for c, key in self._unconfirmed.items() if key == (person, aliases)}
            held = await on_edit_thread(claims.claim)(self.id, clients, person, aliases)
            for client in clients:
                self._unconfirmed.pop(client, None)
                if held.get(client) != person:
                    log.warning(
                        "notebook %s: client id %s, taken on trust, was claimed by another", self.id, client
                    )
            self.claims.update(held)

    def _keep_schema(self, touched: docschema.Touched) -> None:
        """Put right what a client's update broke, in a server change queued right behind it."""
        found: list[str] = []
        self._change(lambda doc: found.extend(docschema.put_right(doc, touched, self._docwatch)))
        if found:
            log.warning("notebook %s: an update broke the schema, put right: %s", self.id, _listed(found))

    def _unique_ids_after_remote(self) -> None:
        """Updates from other workers were put right there, each alone; together they may repeat
        a cell id (one cell moved by two people on two workers at once): every worker that sees
        it gives the later cell an id of its own, and the last writer's id wins everywhere."""
        if not self._docwatch.changed or self._ending is not None:  # reloading: the next room checks
            return
        self._docwatch.changed = False
        found: list[str] = []
        self._change(lambda doc: found.extend(docschema.unique_ids(doc, self._docwatch)))
        if found:
            log.info("notebook %s: %s", self.id, _listed(found))

    async def edit(self, change: Callable[[Doc], None], user_id=None, *, within: float | None = None) -> None:
        """A change made by the server itself (kernel outputs), saved and relayed like any other.
        `within`: how long its write may wait to share a batch with later changes (default: the
        batch window; 0: at once, e.g. output someone waits for)."""
        self._change(change, user_id, within)

    def _change(self, change: Callable[[Doc], None], user_id=None, within: float | None = None) -> None:
        # The transaction's own update: a diff against the state vector before it would also
        # carry the document's whole delete set, and would never be empty.
        # A change that raises halfway still committed what it made: that is saved and relayed
        # like the rest, then the exception goes on. A panic of pycrdt's (pyo3's PanicException,
        # a BaseException) may leave the Doc holding anything: nothing is saved and the room
        # reloads from the database.
        updates: list[bytes] = []
        subscription = self.doc.observe(lambda event: updates.append(event.update))
        try:
            with self.doc.transaction(origin="server"):
                change(self.doc)
        except BaseException as exc:
            if not yupdate.is_panic(exc):
                self._queue_server_update(updates, user_id, within)
                raise
            self._reload_after_panic(exc)
        finally:
            self.doc.unobserve(subscription)
        self._queue_server_update(updates, user_id, within)

    def _reload_after_panic(self, exc: BaseException) -> NoReturn:
        """pycrdt panicked on this room's Doc, which may now hold anything: nothing more of it
        is saved, the room reloads from the database, and the caller gets an ordinary error."""
        log.error("notebook %s: pycrdt panicked (%r); reloading the room", self.id, exc)
        self.restart()
        raise RuntimeError("pycrdt failed on this notebook's document; the notebook reloads") from None

    def _queue_server_update(self, updates: list[bytes], user_id, within: float | None) -> None:
        update = updates[0] if updates else b""  # one transaction, at most one update
        if update and update != protocol.EMPTY_UPDATE:
            self._deleted = None
            self.size += len(update)
            with contextlib.suppress(ValueError):
                self.pieces += yupdate.pieces(update)
            self._queue(Pending(update, user_id, None), None, within)

    async def _relayer(self) -> None:
        """Hand committed batches to the local sockets and the other workers, in order. Batches
        that committed while the previous relay was going on go out together: one frame."""
        while True:
            committed = [await self._committed.get()]
            while not self._committed.empty():
                committed.append(self._committed.get_nowait())
            try:
                await self._relay(committed)
            except Exception:
                log.exception("relaying updates of %s failed", self.id)
            finally:
                for _ in committed:
                    self._committed.task_done()

    async def _relay(self, committed: list[tuple[int, list[tuple[Pending, Socket | None]], bytes]]) -> None:
        # The other workers first: their sockets must not wait for this worker's whole fan-out
        # (a lecture's watchers are on every worker). A channel layer that neither answers nor
        # refuses holds the local sockets for at most PUBLISH_FIRST_WAIT; publishing then goes on
        # beside them, each relay's batches after the previous relay's (`_publish_in_order`),
        # and the next relay does not wait for it: this worker's sockets go on getting every
        # batch while Redis hangs.
        publishing = self._publish_in_order(committed)
        with contextlib.suppress(TimeoutError):  # `_publish` raises nothing else
            await asyncio.wait_for(asyncio.shield(publishing), conf("PUBLISH_FIRST_WAIT"))
        self.send_updates_local([p.data for _, batch, _ in committed for p, _ in batch])
        senders = {s for _, batch, _ in committed for _, s in batch if s is not None and s.ext}
        if senders:
            saved = protocol.saved(committed[-1][2])  # the newest batch's durable state
            for socket in senders:
                await send_to(socket, saved)
        first, batch, _ = committed[-1]
        backlog = first + len(batch) - 1 - self.snapshot_seq
        if backlog > conf("COMPACT_AFTER_UPDATES") + conf("KEEP_RECENT_UPDATES"):
            self._start_compaction()

    def _publish_in_order(
        self, committed: list[tuple[int, list[tuple[Pending, Socket | None]], bytes]]
    ) -> asyncio.Future:
        """Publish these batches once everything relayed before them is published (or given
        up); the returned future is done when they are. While the layer hangs, at most
        `PUBLISH_BACKLOG` batches wait: beyond that they are not published at all, and the
        other workers fetch them from the database (a gap in the sequence, or their periodic
        check): a long hang holds a bounded amount of memory."""
        if self._publish_backlog >= conf("PUBLISH_BACKLOG"):
            metrics.inc("batches_not_published", len(committed))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        self._publish_backlog += len(committed)
        previous = self._last_publish
        self._last_publish = task = asyncio.ensure_future(self._publish(committed, after=previous))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
        return task

    async def _publish(
        self,
        committed: list[tuple[int, list[tuple[Pending, Socket | None]], bytes]],
        after: asyncio.Future | None,
    ) -> None:
        try:
            if after is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(after)
            for first, batch, _ in committed:  # one message per batch: another worker's may lie between
                event = {"type": "updates", "notebook": self.id, "first_seq": first}
                event["writer"] = self.doc.client_id
                updates = [p.data for p, _ in batch]
                if sum(map(len, updates)) > conf("FANOUT_INLINE_BYTES"):  # committed: read it there
                    event["stored"], updates = len(updates), []
                await fanout().publish({**event, "updates": updates})
        except Exception:  # fanout.publish logs a failing layer itself; this is anything else
            log.exception("publishing updates of %s failed; other workers repair from the database", self.id)
        finally:
            self._publish_backlog -= len(committed)

    def restart(self) -> None:
        """Close every socket for a reconnect and forget the room once what is queued is
        written; the next join loads the document afresh from the update log (merged there, in
        order). For a document holding what a client sent out of order (`yupdate.left_out`)."""
        if self._ending is not None or self.closing:
            return
        self._ending = RELOADING
        detach(self._close_sockets_and_forget())

    async def _close_sockets_and_forget(self) -> None:
        for socket in list(self.sockets):
            try:
                await socket.close_with(*self._ending)
            except Exception:
                log.debug("closing a socket failed", exc_info=True)
        self.sockets.clear()
        await self.close()

    async def _fail(self, exc: BaseException | None = None) -> None:
        """Nothing more can be saved: tell every socket (its client still holds its unsaved
        edits and sends them again on reconnecting) and forget the room."""
        self._ending = (SAVE_FAILED, SAVE_FAILED_REASON)
        self._abandon_pending(RuntimeError(f"the room failed: {exc!r}"))
        for socket in list(self.sockets):
            try:
                await socket.close_with(SAVE_FAILED, SAVE_FAILED_REASON)
            except Exception:
                log.debug("closing a socket failed", exc_info=True)
        self.sockets.clear()
        if not self.closing:
            await self.close()

    # events from other workers (and local notifications)

    async def on_fanout(self, event: dict) -> None:
        kind = event["type"]
        if kind == "updates":
            if "writer" in event:
                self.room_writers.add(event["writer"])
            if event.get("stored"):
                self._fetch_stored(event["first_seq"] + event["stored"] - 1)
            else:
                await self._on_remote_updates(event["first_seq"], event["updates"])
        elif kind == "awareness":
            if event.get("reserve"):
                self.presence.reserve(*event["reserve"])
            if event["payload"]:
                self.presence.apply_remote(event["payload"])
                await self._send_local(protocol.awareness(event["payload"]))
        elif kind == "access":
            self._access_changed_at = asyncio.get_running_loop().time()
            try:
                await self._recheck_access()
            except Exception as exc:  # the database is away: the room's next tick tries again
                log.warning("re-checking access in %s failed (%r); again at the next tick", self.id, exc)
        elif kind == "replaced":
            await self._replaced()
        elif kind == "kernel":
            self.kernel_state = event["payload"]
            await self._send_kernel_state(event["payload"])

    async def _recheck_access(self) -> None:
        """Every socket, now: a grant, link or the notebook changed. If a check fails, all of
        them are checked again at the room's next tick (`_watch`), not left to the spread
        re-checks: a revoked editor on a worker that could not reach the database kept editing,
        saved and relayed, until their sockets' turns came, seconds after it was back."""
        self._recheck_everyone = False
        try:
            for socket in list(self.sockets):
                await socket.recheck_access()
        except Exception:
            self._recheck_everyone = True
            raise

    async def _replaced(self) -> None:
        self._ending = REPLACED
        for socket in list(self.sockets):
            await socket.close_with(*self._ending)
        self.sockets.clear()
        self._abandon_pending(updatelog.Replaced(self.id))
        await self.close()
