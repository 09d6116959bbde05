"""What a room sends to its sockets: presence (awareness, throttled per socket to one message
every `AWARENESS_MIN_INTERVAL`), the kernel's status (its `message` only to those who may
run) and frames for every local socket. A mixin of `collab.rooms.Room`. Runs in the event loop;
never blocks; a socket that fails to take a frame never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import time

from collab import protocol
from collab.conf import conf
from collab.fanout import fanout
from collab.socket import Socket

log = logging.getLogger("collab.rooms")


class RoomBroadcast:
    id: str
    sockets: set[Socket]
    kernel_state: dict | None
    _aw_last: dict[Socket, float]
    _aw_pending: dict[Socket, bytes]

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
                await send_to(socket, kernel_frame(payload, socket.may_run))

    async def send_presence(self, socket: Socket) -> None:
        full = self.presence.full()
        if full:
            await send_to(socket, protocol.awareness(full))

    # sending

    async def _send_local(self, frame: bytes) -> None:
        for socket in list(self.sockets):
            await send_to(socket, frame)

    async def broadcast_ext(self, frame: bytes) -> None:
        for socket in list(self.sockets):
            if socket.ext:
                await send_to(socket, frame)


def kernel_frame(payload: dict, may_run: bool) -> bytes:
    """The KERNEL frame for one socket: without the message for those who may not run."""
    return protocol.kernel(payload if may_run else {**payload, "message": ""})


async def send_to(socket: Socket, frame: bytes) -> None:
    try:
        await socket.send_frame(frame)
    except Exception:  # a socket that is going away must not stop the others
        log.debug("send failed", exc_info=True)
