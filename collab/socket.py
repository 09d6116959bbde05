"""What a room needs from a connected client (the consumer); a protocol, so the room's parts
(`collab.rooms`, `collab.writes`) name it without importing the consumer or each other."""

from __future__ import annotations

from typing import Protocol


class Socket(Protocol):
    client_id: int | None
    ext: bool
    may_run: bool  # receives the kernel status's message

    async def send_frame(self, frame: bytes) -> None: ...
    async def close_with(self, code: int, reason: str) -> None: ...
    async def recheck_access(self) -> None: ...
