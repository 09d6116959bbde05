"""What a room needs from a connected client (the consumer); a protocol, so the room's parts
(`collab.rooms`, `collab.writes`) name it without importing the consumer or each other."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Outgoing:
    """One frame for many sockets. The transport's encoding of it (the websocket frame around
    it) is made once, by the first socket that needs it, and the same bytes serve them all."""

    __slots__ = ("data", "encoded")

    def __init__(self, data: bytes):
        self.data = data
        self.encoded: bytes | None = None


class Socket(Protocol):
    client_id: int | None
    ext: bool
    may_run: bool  # receives the kernel status's message
    access_ends_at: datetime | None  # when its access ends by itself (a link's expiry), if known

    def send_now(self, frame: Outgoing) -> bool:
        """Write the frame at once, without awaiting; False if this socket cannot (then the
        caller awaits `send_frame`). Never raises."""
        ...

    async def send_frame(self, frame: bytes) -> None: ...
    async def close_with(self, code: int, reason: str) -> None: ...
    async def recheck_access(self) -> None: ...
