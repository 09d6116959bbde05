"""What a room sends to its sockets: presence (awareness, throttled per socket to one message
every `AWARENESS_MIN_INTERVAL`), the kernel's status (its `message` only to those who may
run) and frames for every local socket. A mixin of `collab.rooms.Room`. Runs in the event loop;
never blocks; a socket that fails to take a frame never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pycrdt import merge_updates

from collab import metrics, protocol
from collab.conf import conf
from collab.fanout import fanout
from collab.socket import Outgoing, Socket
from collab.tasks import detach

log = logging.getLogger("collab.rooms")

# What the local sockets' frames merge at most at once (`_merge_groups`).
MERGE_MAX_BYTES = 256 * 1024


class RoomBroadcast:
    id: str
    sockets: set[Socket]
    kernel_state: dict | None
    _aw_last: dict[Socket, float]
    _aw_pending: dict[Socket, bytes]
    _outbox: list[bytes]
    _outbox_ready: asyncio.Event

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
                asyncio.get_running_loop().call_later(wait, lambda: detach(self._flush_awareness(socket)))
            self._aw_pending[socket] = stamped  # only the newest state matters

    async def _flush_awareness(self, socket: Socket) -> None:
        stamped = self._aw_pending.pop(socket, None)
        if stamped and socket in self.sockets:
            self._aw_last[socket] = time.monotonic()
            await self._relay_awareness(stamped)

    async def _relay_awareness(self, payload: bytes | None, reserve: tuple[int, str] | None = None) -> None:
        """A presence change for every socket of the room, here and on the other workers;
        `reserve`: a client id its person's socket released, for the others to keep too."""
        if payload:
            await self._send_local(protocol.awareness(payload))
        if not payload and reserve is None:
            return
        event = {"type": "awareness", "notebook": self.id, "payload": payload or b""}
        if reserve is not None:
            event["reserve"] = list(reserve)
        # Not awaited: the socket's next frames (its edits) must not wait for a layer that hangs.
        fanout().publish_soon(event)

    async def set_kernel_state(self, payload: dict) -> None:
        """Kernel status for everyone in the notebook, on every worker (the bridge calls this);
        its `message` (why a run failed, what the kernel server answered) only to those who may
        run (`kernel_frame`)."""
        self.kernel_state = payload
        await self._send_kernel_state(payload)
        await fanout().publish_promptly({"type": "kernel", "notebook": self.id, "payload": payload})

    async def _send_kernel_state(self, payload: dict) -> None:
        frames = {may_run: Outgoing(kernel_frame(payload, may_run)) for may_run in (False, True)}
        for socket in list(self.sockets):
            if socket.ext:
                frame = frames[bool(socket.may_run)]
                if not socket.send_now(frame):
                    await send_to(socket, frame.data)

    async def send_presence(self, socket: Socket) -> None:
        full = self.presence.full()
        if full:
            await send_to(socket, protocol.awareness(full))

    # sending

    def send_updates_local(self, updates: list[bytes]) -> None:
        """Document updates for the local sockets: queued for `_sender`, which sends everything
        queued by then as one frame. A big room with fast edits (a lecture: every update to
        hundreds of sockets) sends fewer, larger frames instead of one fan-out per update."""
        self._outbox.extend(updates)
        self._outbox_ready.set()

    async def _sender(self) -> None:
        while True:
            await self._outbox_ready.wait()
            await asyncio.sleep(0)  # what else is ready in this turn of the loop joins the frame
            self._outbox_ready.clear()
            updates, self._outbox = self._outbox, []
            if not updates or not self.sockets:
                continue
            loop = asyncio.get_running_loop()
            started = loop.time()
            for group in _merge_groups(updates):
                merged = group[0] if len(group) == 1 else merge_updates(*group)
                metrics.inc("update_frames_sent")
                await self._send_local(protocol.sync_update(merged))
            if len(updates) > 1:
                metrics.inc("updates_merged", len(updates))
            del updates
            # A room whose fan-out is long (hundreds of sockets) lets the next updates gather
            # for as long as it took, at least FANOUT_GATHER_FLOOR and at most FANOUT_GATHER_MAX:
            # fewer, merged frames when edits come fast, and each worker's share of the CPU
            # stays bounded even with more workers than cores. A small room's fan-out is short:
            # its next frame does not wait.
            spent = loop.time() - started
            if spent >= conf("FANOUT_GATHER_MIN"):
                gather = max(spent, conf("FANOUT_GATHER_FLOOR"))
                await asyncio.sleep(min(gather, conf("FANOUT_GATHER_MAX")))

    async def _send_local(self, frame: bytes) -> None:
        await fan_out(list(self.sockets), frame)

    async def broadcast_ext(self, frame: bytes) -> None:
        await fan_out([s for s in self.sockets if s.ext], frame)


def _merge_groups(updates: list[bytes]) -> list[list[bytes]]:
    """The updates in order, in groups of at most `MERGE_MAX_BYTES` each (an update larger than
    that alone): merging decodes every item of its updates at once, about 200 bytes of memory
    for an item that takes 5 to 15 bytes in an update, and glibc keeps what it freed."""
    groups: list[list[bytes]] = []
    size = MERGE_MAX_BYTES
    for update in updates:
        if size + len(update) > MERGE_MAX_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(update)
        size += len(update)
    return groups


def kernel_frame(payload: dict, may_run: bool) -> bytes:
    """The KERNEL frame for one socket: without the message for those who may not run."""
    return protocol.kernel(payload if may_run else {**payload, "message": ""})


async def fan_out(sockets: list[Socket], frame: bytes) -> None:
    """The same frame to every socket, in this order: encoded once and written straight to
    each socket's connection where it can be (`Socket.send_now`, no await, no task), the
    ordinary awaited send otherwise. A socket that fails or has gone never stops the others."""
    shared = Outgoing(frame)
    awaited = 0
    for socket in sockets:
        if not socket.send_now(shared):
            awaited += 1
            await send_to(socket, frame)
    metrics.inc("frames_written_direct", len(sockets) - awaited)
    if awaited:
        metrics.inc("frames_sent_awaited", awaited)


async def send_to(socket: Socket, frame: bytes) -> None:
    try:
        await socket.send_frame(frame)
    except Exception:  # a socket that is going away must not stop the others
        log.debug("send failed", exc_info=True)
