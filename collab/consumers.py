"""One consumer per websocket. Thin: it checks who may do what (through notebooks.access) and
hands frames to the notebook's Room. Runs in the event loop; ORM work goes through
database_sync_to_async.

Close codes: 4400 malformed frame, 4401 not signed in / link no longer valid, 4403 no access,
4404 no such notebook, 4409 document replaced (reload), 4413 too large / too many sockets of
one person, 4429 the room is full or the person shows presence with too many client ids at once
(collab.rooms), or the client does not read what is sent to it (collab.daphne_patches): it
reconnects later, 4503 the server cannot reach its database right
now (reconnect; unsaved edits are sent again), also when it fails while the session and user
are read, before this consumer runs (`collab.auth`).

Every way a socket ends (a clean close, a close code, a handler that fails, the application
instance cancelled) runs `_leave`, so a socket never stays in its room or in its person's count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import datetime
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from audit import log as audit
from audit.models import AuditEvent
from collab import commands, daphne_patches, metrics, protocol
from collab.auditqueue import audit_queue
from collab.auth import DATABASE_ERRORS, UNAVAILABLE, UNAVAILABLE_REASON
from collab.broadcast import kernel_frame
from collab.protocol import MessageType, ProtocolError, SyncType
from collab.rooms import REPLACED, Room, RoomError, Unclaimed, WriterTaken, get_room
from collab.socket import Outgoing
from collab.tasks import detach
from notebooks import access as acl
from notebooks.models import Grant, Notebook, ShareLink
from notebooks.sharing import note_if_expired

log = logging.getLogger(__name__)

# Updates a socket may send before its sync step 2 (and, naming no epoch, its sync step 1): they
# wait for it. An editor that reconnects while its person types sends them before its step 2.
EARLY_UPDATES_MAX = 256
# ... and together at most this large, or one message's worth if less (the step 2 aside: one
# message, bounded as any is). A socket that never sends its step 2 holds them while it is open.
EARLY_BYTES_MAX = 1024 * 1024
# ... and all the sockets of one person on this worker together at most this much (the anonymous
# guests of a share link count as one person: each visit of the link is a new guest): 300 guest
# sockets of a room, or one person's 20, each holding a message's worth were hundreds of MB.
EARLY_BYTES_PER_PERSON = 4 * 1024 * 1024
# Person (or, for anonymous guests, the share link they came through) -> the bytes of updates
# their sockets on this worker hold waiting for their sync step 2.
EARLY_HELD: dict[str, int] = {}
# How much longer than the document's own a sync step 1's state vector may be (writers of the
# client's own, never saved): about 5,000 of them.
STATE_VECTOR_SLACK = 64 * 1024
VIEW_ONLY = "You can view this notebook but not change it."

# Sockets of this worker per person (Principal.key), whatever the room.
SOCKETS_PER_PERSON: dict[str, int] = {}
# Person (or, for anonymous guests, the share link they came through) -> monotonic time until
# which they may not join a notebook on this worker: their editor sent changes that made a room
# reload for everyone (`RoomError.penalty`).
KEPT_OUT: dict[str, float] = {}
# ... and the same in the cache (in Redis, shared by every worker), for the other workers: kept out
# on one worker only, they joined another at once (nginx sends a socket to the worker with the
# fewest) and reloaded its room too.
KEEP_OUT_CACHE = "collab-kept-out:"
KEEP_OUT_LOOKUP_WAIT = 0.5  # seconds

# Why access said no -> the close code the client acts on (4401: sign in or the link is gone).
CLOSE_CODES = {
    acl.Denied.SIGN_IN: 4401,
    acl.Denied.LINK_GONE: 4401,
    acl.Denied.NO_ACCESS: 4403,
    acl.Denied.ROLE_TOO_LOW: 4403,
    acl.Denied.REMOVED: 4403,
    acl.Denied.NO_NOTEBOOK: 4404,
}


class NotebookConsumer(AsyncWebsocketConsumer):
    # Rooms deliver to sockets in-process; a per-socket channel would only cost Redis traffic.
    channel_layer_alias = "__no_layer__"

    room: Room | None = None
    access: acl.Access | None = None
    client_id: int | None = None
    writers_claimed = 0  # client ids its updates claimed (`_receive`)
    _step2_update: bytes | None = None  # its answer to the room's sync step 1 (`_update`)
    ext = False
    counted: str | None = None  # the Principal.key this socket counts against
    epoch_known = False  # its document is of the room's epoch: named at connect, or `_check_epoch`
    step2_seen = False  # its client answered the room's sync step 1
    _early: list[bytes]  # updates that came before those two (`_update`)
    _early_bytes = 0  # their size, the step 2 aside
    _early_key: str | None = None  # whom they count against in `EARLY_HELD`
    _join_recorded: asyncio.Future | None = None

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._leave()

    async def connect(self) -> None:
        self.notebook_id = str(self.scope["url_route"]["kwargs"]["notebook_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.ext = query.get("ext", [""])[0] == "1"
        self.epoch = query.get("epoch", [""])[0]
        self.stats = {"updates": 0, "denied": 0}
        self._commands: set[asyncio.Task] = set()
        self.cells_touched: set[str] = set()
        self._early = []
        self.principal = acl.principal_from_session(self.scope.get("user"), self.scope.get("session"))
        await self.accept()
        room: Room | None = None
        try:
            checked_at = asyncio.get_running_loop().time()
            self.access = await database_sync_to_async(acl.access_notebook)(self.principal, self.notebook_id)
            kept_out = await _kept_out_elsewhere(self._keep_out_keys())
            room = await get_room(self.notebook_id)
            if self.epoch and self.epoch != room.epoch:
                raise RoomError(*REPLACED)
            self.epoch_known = bool(self.epoch)
            self._count_person(kept_out)
            room.add(self, guest=self.access.is_guest)
            if room.access_may_have_changed_since(checked_at, self.access.notebook.access_version):
                # A sharing change came while this socket was on its way in (the keep-out
                # lookup, waiting for the room to load): checked again, now that it is in the
                # room.
                try:
                    self.access = await database_sync_to_async(acl.recheck)(
                        self.principal, self.notebook_id, self.access
                    )
                except BaseException:
                    room.discard(self)
                    room.unload_if_unused()
                    raise
        except acl.NoAccess as e:
            await database_sync_to_async(self._audit)("access.denied", reason=e.reason)
            await self.close_with(CLOSE_CODES[e.code], e.reason)
            return
        except RoomError as e:
            if room is not None:  # loaded for this join alone, it must not stay in memory
                room.unload_if_unused()
            await self.close_with(e.code, e.reason)
            return
        except Exception as e:  # the database is unreachable: say so, the client retries
            log.warning("opening notebook %s failed: %r", self.notebook_id, e)
            await self.close_with(UNAVAILABLE, UNAVAILABLE_REASON)
            return
        self.room = room
        await self.send_frame(protocol.sync_step1(room.doc.get_state()))
        await room.send_presence(self)
        if self.ext:
            await self.send_frame(protocol.session(self._session_info()))
            if room.kernel_state:
                await self.send_frame(kernel_frame(room.kernel_state, self.may_run))
            if (kernels := commands.handler()) is not None:
                await kernels.socket_joined()
        # Recorded while the client syncs, not before its first frame is read: the join's
        # writes (audit row, last seen) would otherwise hold up its sync step 1.
        self._join_recorded = asyncio.ensure_future(self._record_join())

    async def _record_join(self) -> None:
        try:
            await database_sync_to_async(self._joined)()
        except Exception as e:  # the join is live; only its audit record is missing
            log.warning("recording a join failed: %r", e)

    async def dispatch(self, message) -> None:
        # Channels closes stale database connections before every handler, a hop through
        # the database thread that would make each keystroke wait behind batch writes.
        # Our ORM calls go through database_sync_to_async, which does that itself.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def disconnect(self, code: int) -> None:
        await self._leave()

    def _keep_out_keys(self) -> list[str]:
        """Whom a reload this socket caused keeps out: its person, and for an anonymous guest
        also the link it came through (opening the link again is a new guest, a new person:
        without it, one guest reloaded the room as often as they liked)."""
        keys = [self.principal.key]
        if self.principal.user is None and self.access is not None and self.access.link is not None:
            keys.append(f"link:{self.access.link.pk}")
        return keys

    def _keep_out(self) -> None:
        """Keep this socket's person out for a while, on this worker and (through the cache, which
        may be slow: nobody waits for it) on the others."""
        now = time.monotonic()
        for key in [k for k, until in KEPT_OUT.items() if until <= now]:
            del KEPT_OUT[key]
        seconds = settings.COLLAB["KEEP_OUT_AFTER_RELOAD"]
        keys = self._keep_out_keys()
        for key in keys:
            KEPT_OUT[key] = now + seconds
        detach(_share_keep_out(keys, seconds))

    def _count_person(self, kept_out: bool = False) -> None:
        key = self.principal.key
        now = time.monotonic()
        if kept_out or any(KEPT_OUT.get(k, 0.0) > now for k in self._keep_out_keys()):
            raise RoomError(
                4429, "Your editor sent changes the server could not take; try again in a minute."
            )
        if SOCKETS_PER_PERSON.get(key, 0) >= settings.COLLAB["MAX_SOCKETS_PER_PERSON"]:
            metrics.inc("sockets_refused_per_person")
            raise RoomError(4413, "You have too many notebook connections open; close some tabs.")
        SOCKETS_PER_PERSON[key] = SOCKETS_PER_PERSON.get(key, 0) + 1
        self.counted = key

    async def _leave(self) -> None:
        """Give back this socket's place in its room and in its person's count; idempotent.
        The synchronous part comes first, so that it happens even if this task is cancelled."""
        self._release_early()
        if self.counted is not None:
            key, self.counted = self.counted, None
            SOCKETS_PER_PERSON[key] -= 1
            if SOCKETS_PER_PERSON[key] <= 0:
                del SOCKETS_PER_PERSON[key]
        if self.room is None:
            return
        room, self.room = self.room, None
        if self.client_id is not None:
            room.presence.release(self.client_id, self, self.principal.key)
        room.discard(self)
        await room.remove(self)
        cells = sorted(self.cells_touched)
        try:
            if self._join_recorded is not None:  # "left" is never recorded before "joined"
                await self._join_recorded
            unwritten = await database_sync_to_async(self._record_left)({**self.stats, "cells": cells})
        except Exception as e:
            log.warning("recording the end of a session failed: %r", e)
        else:
            if unwritten is not None:  # the database away: written when it answers again
                audit_queue().keep(unwritten)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.room is None:
            return
        if bytes_data is None:
            await self.close_with(4400, "This endpoint speaks the binary y-websocket protocol.")
            return
        if len(bytes_data) > settings.COLLAB["MAX_MESSAGE_BYTES"]:
            await self.close_with(4413, "That change is larger than the server accepts.")
            return
        try:
            await self._dispatch(protocol.parse(bytes_data))
        except ProtocolError as e:
            await self.close_with(4400, f"Malformed message: {e}.")
        except RoomError as e:
            if e.penalty:  # the room reloads for everyone: not again at once by the same person
                self._keep_out()
            await self.close_with(e.code, e.reason)
        except Exception:
            log.exception("a frame of a socket of notebook %s failed", self.notebook_id)
            metrics.inc("handler_errors")
            await self.close_with(1011, "The server failed on a message from this client; reconnect.")

    async def _dispatch(self, message: protocol.Message) -> None:
        room = self.room
        if message.type is MessageType.SYNC:
            if message.sync_type is SyncType.STEP1:
                await self._step1(message.payload)
            elif message.sync_type is SyncType.STEP2:
                await self._step2(message.payload)
            else:
                await self._update(message.payload)
        elif message.type is MessageType.AWARENESS:
            await self._awareness(message.payload)
        elif message.type is MessageType.QUERY_AWARENESS:
            await room.send_presence(self)
        elif message.type is MessageType.COMMAND:
            await self._command(message.payload)

    async def _step1(self, state_vector: bytes) -> None:
        """A state vector pycrdt cannot decode is the client's error (4400), not the server's."""
        undecodable = ProtocolError("the state vector of sync step 1 cannot be decoded")
        # A client's state vector names at most the document's writers and its own: one much
        # larger would only hold the worker while it is read (millions of writers: seconds).
        if len(state_vector) > len(self.room.doc.get_state()) + STATE_VECTOR_SLACK:
            raise ProtocolError("the state vector of sync step 1 is far larger than this document's")
        try:
            clocks = protocol.parse_state_vector(state_vector)  # cheap; pycrdt's own check follows
            if not self.epoch_known:
                self._check_epoch(clocks)
            await self.room.handle_step1(self, state_vector)
        except ValueError:  # ProtocolError, or pycrdt's "Cannot decode state"
            raise undecodable from None
        await self._replay_early()

    async def _step2(self, update: bytes) -> None:
        """The client's answer to the room's sync step 1: what it holds that the room did not.
        Its updates sent before this one may build on that (typed while it reconnected), so
        they waited for it (`_update`); from here on, none of its updates may wait for an
        earlier one (`Room.receive_update` refuses such an update)."""
        if self.step2_seen:
            await self._update(update)
            return
        self.step2_seen = True
        await self._update(update, first=True)
        await self._replay_early()

    async def _awareness(self, payload: bytes) -> None:
        """One client id per socket (`Presence.claim`), a size cap; the room throttles."""
        if len(payload) > settings.COLLAB["MAX_AWARENESS_BYTES"]:
            metrics.inc("awareness_dropped")
            raise RoomError(4413, "Your presence information is larger than the server accepts.")
        if self.client_id is None:
            room, person = self.room, self.principal.key
            self.client_id = room.presence.claim(payload, self, person)
            if self.client_id is not None and room.claims.get(self.client_id) != person:
                # Held in the database from here on, before this client writes under it
                # (`Room._check_writers`): on every worker, and after its presence is gone.
                held = await room.claim({self.client_id}, person, self.principal.aliases)
                if held.get(self.client_id) != person:
                    if room.presence.owners.get(self.client_id) is self:
                        del room.presence.owners[self.client_id]
                    self.client_id = None
            if self.client_id is None:
                metrics.inc("awareness_dropped")
                return  # another socket or person speaks for that client id
        await self.room.receive_awareness(self, payload, self.access.identity)

    def _check_epoch(self, clocks: dict[int, int]) -> None:
        """A client that does not name its document's epoch (`?epoch=`, which the editor always
        sends) may still hold a replaced document: a tab or a stock y-websocket client that
        reconnects by itself. Its state vector tells: a replacement builds the new document
        with writers of its own, so a document of this epoch that has synced once names at
        least one writer the room knows, and a document from before names only writers it has
        never seen. That one would merge the old document back: 4409, like a stale epoch. (A
        writer of its own that never reached the database, its edits refused or lost with a
        worker, is fine beside known ones.)"""
        known = protocol.parse_state_vector(self.room.doc.get_state())
        writers = {client for client, clock in clocks.items() if clock}
        if writers and not writers & known.keys():
            raise RoomError(*REPLACED)
        self.epoch_known = True

    async def _replay_early(self) -> None:
        if not (self.epoch_known and self.step2_seen):
            return
        early, self._early = self._early, []
        self._release_early()
        for update in early:
            await self._update(update)

    def _release_early(self) -> None:
        """Give back what this socket's early updates counted in `EARLY_HELD` (synchronous)."""
        key, held = self._early_key, self._early_bytes
        self._early_bytes = 0
        if key is None or not held:
            return
        left = EARLY_HELD.get(key, 0) - held
        if left > 0:
            EARLY_HELD[key] = left
        else:
            EARLY_HELD.pop(key, None)

    async def _update(self, update: bytes, first: bool = False) -> None:
        """Write access is decided here, for every update, against the socket's current role.
        An editor's updates wait until its sync step 2 and, naming no epoch, its sync step 1
        have come: a few, together no larger than one message may be. `first`: the step 2,
        which goes before the updates that waited for it."""
        if first:
            self._step2_update = update  # its deletions are checked against the document's
        if not self.may_edit:
            if not self.room.repeats_document(update, step2=first):
                self.stats["denied"] += 1
                await self.send_frame(protocol.permission_denied(VIEW_ONLY))
            return
        if not (self.epoch_known and self.step2_seen):
            # Until its sync step 1 has shown which epoch its document is of (a generic client
            # may answer our step 1 before sending its own), and its step 2 has brought what
            # they may build on.
            if first:
                self._early.insert(0, update)
                return
            held = self._early_bytes + len(update)
            limit = min(EARLY_BYTES_MAX, settings.COLLAB["MAX_MESSAGE_BYTES"])
            key = self._early_key or self._keep_out_keys()[-1]  # the link, for an anonymous guest
            together = EARLY_HELD.get(key, 0) + len(update)
            if len(self._early) >= EARLY_UPDATES_MAX or held > limit or together > EARLY_BYTES_PER_PERSON:
                raise ProtocolError("a client answers sync step 1 before it sends many updates")
            self._early_bytes, self._early_key, EARLY_HELD[key] = held, key, together
            self._early.append(update)
            return
        room, user, link = self.room, self.principal.user, self.access.link
        ids = (getattr(user, "pk", None), getattr(link, "pk", None))
        try:
            touched = await self._receive(update, ids)
        except WriterTaken as taken:
            if taken.penalty:
                raise
            # The room may lack what another person wrote (a fan-out message lost): what this
            # client brings of theirs is then in the database. Refused if it still writes anew.
            try:
                await room.repair()
            except Exception:
                raise taken from None
            try:
                touched = await self._receive(update, ids)
            except WriterTaken:
                log.info("notebook %s: an update under another person's client id refused", self.notebook_id)
                raise
        if touched is not None:
            self.stats["updates"] += 1
            metrics.inc("updates_received")
            self.cells_touched |= touched

    async def _receive(self, update: bytes, ids: tuple) -> set[str] | None:
        """`Room.receive_update`, claiming first the client ids it writes under anew (its own
        at its first edit, also when its presence claimed it: an id without content may have
        been released since; at most `MAX_WRITERS_PER_SOCKET`). A claim, or a repair, is awaited
        on another thread than access re-checks: an update whose socket was closed or lost its
        write access meanwhile is dropped (a grant removed while an editor's first edit waited
        for its claim closed the socket, and the edit was then saved and relayed all the same)."""
        room, person, aliases = self.room, self.principal.key, self.principal.aliases
        confirmed: frozenset[int] = frozenset()
        for _ in range(2):
            if self.room is not room:
                return None
            if not self.may_edit:
                self.stats["denied"] += 1
                await self.send_frame(protocol.permission_denied(VIEW_ONLY))
                return None
            try:
                step2 = update is self._step2_update
                return room.receive_update(
                    update, self, *ids, person=person, aliases=aliases, step2=step2, confirmed=confirmed
                )
            except Unclaimed as unclaimed:
                self.writers_claimed += len(unclaimed.clients)
                if self.writers_claimed > settings.COLLAB["MAX_WRITERS_PER_SOCKET"]:
                    raise ProtocolError("a client writes under a few client ids at most") from None
                held = await room.claim(unclaimed.clients, person, aliases)
                confirmed = frozenset(client for client, holder in held.items() if holder == person)
        raise RoomError(4400, "This editor sent changes the server cannot take; reload the page.")

    async def _command(self, payload: bytes) -> None:
        """A kernel request over the socket: the same rules as the HTTP endpoints, without
        the cost of an HTTP request (session, user and access are already known here)."""
        if not self.ext:
            raise ProtocolError("extension messages need ?ext=1")
        try:
            request = json.loads(payload)
            request_id, op, args = request["id"], request["op"], request.get("args") or {}
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ProtocolError("a command is JSON with id, op and args") from None
        kernels = commands.handler()
        if not self.access.can(acl.Action.RUN):
            reply = {"status": 403, "body": {"error": "Your role does not allow running code."}}
        elif kernels is None:
            reply = commands.NO_HANDLER
        elif error := kernels.invalid(op, args):
            reply = {"status": 400, "body": {"error": error}}
        else:
            # Starting a kernel takes seconds: answer later, keep reading this socket's frames.
            task = asyncio.create_task(self._run_command(kernels, request_id, op, args))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)
            return
        await self.send_frame(protocol.command_reply(request_id, reply["status"], reply["body"]))

    async def _run_command(self, kernels: commands.CommandHandler, request_id, op: str, args: dict) -> None:
        try:
            reply = await kernels.call(self.notebook_id, op, args, self.principal, self.scope)
        except Exception:
            log.exception("kernel command %s failed", op)
            reply = {"status": 500, "body": {"error": "The kernel request failed."}}
        if self.room is not None:
            await self.send_frame(
                protocol.command_reply(request_id, reply.get("status", 200), reply.get("body", {}))
            )

    # called by the room

    def send_now(self, frame: Outgoing) -> bool:
        """Under daphne, the room's frame goes straight to this socket's connection
        (`daphne_patches.write_frame`); elsewhere (tests' in-memory server) False."""
        websocket = self.scope.get(daphne_patches.SCOPE_KEY)
        if websocket is None:
            return False
        try:
            return daphne_patches.write_frame(websocket, frame)
        except Exception:  # a socket going away must not stop the room's other sockets
            log.debug("writing a frame failed", exc_info=True)
            return True

    async def send_frame(self, frame: bytes) -> None:
        await self.send(bytes_data=frame)

    async def close_with(self, code: int, reason: str) -> None:
        if code == 4400:
            metrics.inc("frames_malformed")
        elif code == 4413:
            metrics.inc("frames_too_large")
        try:
            if code in (4401, 4403, 4404):
                await self.send(bytes_data=protocol.permission_denied(reason))
            await self.close(code=code, reason=reason)
        finally:
            await self._leave()

    async def recheck_access(self) -> None:
        try:
            access = await database_sync_to_async(acl.recheck)(self.principal, self.notebook_id, self.access)
        except acl.NoAccess as e:
            # Closed first, noted after: a room whose link expired checks all its guests at
            # once, and each is closed as soon as its own check answers (`Room._recheck_due_sockets`).
            await self.close_with(CLOSE_CODES[e.code], e.reason)
            if self.access and self.access.link is not None:
                await database_sync_to_async(_note_if_expired)(self.access.link.pk)
            return
        old, self.access = self.access, access
        if old is not None and old.role != access.role:
            if self.ext:
                info = self._session_info()
                info["message"] = f"Your role is now “{access.role.label}”."
                await self.send_frame(protocol.session(info))
            if self.client_id is not None and self.room is not None:
                restamped = self.room.presence.restamp(self.client_id, access.identity)
                if restamped:
                    await self.room._relay_awareness(restamped)

    @property
    def access_ends_at(self) -> datetime | None:
        return self.access.ends_at if self.access is not None else None

    @property
    def may_edit(self) -> bool:
        """Its role allows editing and its access has not ended by itself meanwhile: the tick
        that closes a socket whose link expired comes up to COLLAB_RESYNC_INTERVAL later."""
        if self.access is None or not self.access.can(acl.Action.EDIT):
            return False
        ends_at = self.access.ends_at
        return ends_at is None or timezone.now() < ends_at

    @property
    def may_run(self) -> bool:
        return self.access is not None and self.access.can(acl.Action.RUN)

    def _session_info(self) -> dict:
        return {
            "role": self.access.role.value,
            "canEdit": self.access.can(acl.Action.EDIT),
            "canRun": self.access.can(acl.Action.RUN),
            "message": "",
        }

    # audit and bookkeeping (run in a thread)

    def _audit(self, action: str, **details) -> None:
        self._audit_event(action, **details).save()

    def _record_left(self, details: dict) -> AuditEvent | None:
        """The end of this session, written; or, if the database cannot be reached, the event
        to write later (`collab.auditqueue`)."""
        event = self._audit_event("session.left", **details)
        try:
            event.save()
        except DATABASE_ERRORS:
            return event
        return None

    def _audit_event(self, action: str, **details) -> AuditEvent:
        """An event about this socket, not yet written (no query while its access is known)."""
        access = self.access
        return audit.build(
            action,
            notebook=access.notebook
            if access
            else Notebook.objects.filter(pk=self.notebook_id).first() or self.notebook_id,
            actor=self.principal.user,
            link=access.link if access else None,
            label=access.actor_label if access else "",
            request=self.scope,
            **details,
        )

    def _joined(self) -> None:
        if self.principal.user is not None and self.access.via_grant:
            Grant.objects.filter(notebook_id=self.notebook_id, user=self.principal.user).update(
                last_seen_at=timezone.now()
            )
        self._audit("session.joined", via=self.access.via, role=self.access.role.value)


async def _kept_out_elsewhere(keys: list[str]) -> bool:
    """Whether another worker keeps one of these out (`KEEP_OUT_CACHE`). Not in the database's
    thread, which a Redis that hangs would hold for every room's writes; a cache that does not
    answer within `KEEP_OUT_LOOKUP_WAIT` lets them in (this worker still keeps out whom it saw)."""
    try:
        lookup = asyncio.to_thread(cache.get_many, [KEEP_OUT_CACHE + key for key in keys])
        return bool(await asyncio.wait_for(lookup, KEEP_OUT_LOOKUP_WAIT))
    except Exception as e:
        log.info("reading who is kept out failed: %r", e)
        return False


async def _share_keep_out(keys: list[str], seconds: float) -> None:
    try:
        shared = {KEEP_OUT_CACHE + key: True for key in keys}
        await asyncio.to_thread(cache.set_many, shared, max(1, math.ceil(seconds)))
    except Exception as e:
        log.warning("keeping a person out on the other workers failed: %r", e)


def _note_if_expired(link_id: int) -> None:
    link = ShareLink.objects.select_related("notebook").filter(pk=link_id).first()
    if link is not None:
        note_if_expired(link)
