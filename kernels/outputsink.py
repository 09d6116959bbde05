"""The bridge's output sink: where a kernel's outputs and the bridge's own marks become the
notebook's cells. Every change goes through the Room (`room.edit`), so it is persisted and
relayed like a client's update; outputs are collected and written in one edit at most every
`KERNEL_FLUSH_INTERVAL` seconds (the first after a quiet spell at once). Runs in the event loop.

Needs from the bridge: `notebook_id`, `room`, `writer`, `info()` (the status payload) and
`_spawn()`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from pycrdt import Doc

from collab.fanout import fanout
from collab.rooms import Room, get_room
from kernels.execution import Output
from kernels.outputs import OutputWriter

log = logging.getLogger("kernels.bridge")


@dataclass
class _Batch:
    events: list[tuple[str, Output]] = field(default_factory=list)
    handle: asyncio.TimerHandle | None = None
    flushed_at: float = 0.0  # loop time of the last flush


class OutputSink:
    notebook_id: str
    room: Room | None
    writer: OutputWriter | None
    _batch: _Batch

    async def _ensure_room(self) -> Room:
        if self.room is not None and (self.room.closing or self.room.ending):  # hold the next one
            self.room.release()
            self.room = None
        if self.room is None:
            room = await get_room(self.notebook_id)
            room.hold()
            self.room, self.writer = room, OutputWriter(room.doc)
        return self.room

    async def _edit(self, change, user_id: Any = None, within: float | None = None) -> None:
        room = await self._ensure_room()
        await room.edit(lambda doc: change(doc), user_id=user_id, within=within)

    def _mark(self, cell_ids: list[str], state: str) -> None:
        assert self.writer is not None
        for cell_id in cell_ids:
            self.writer.set_execution_state(cell_id, state)

    def _fail_cell(self, cell_id: str, message: str) -> None:
        assert self.writer is not None
        self.writer.fail(cell_id, message)
        self.writer.set_execution_state(cell_id, "idle")

    async def _broadcast(self) -> None:
        payload = self.info()
        if self.room is not None and not self.room.closing:
            await self.room.set_kernel_state(payload)
        else:
            await fanout().publish_promptly(
                {"type": "kernel", "notebook": self.notebook_id, "payload": payload}
            )

    def _collect(self, cell_id: str, event: Output) -> None:
        """Keep an output for the next flush."""
        self._batch.events.append((cell_id, event))
        if self._batch.handle is None:
            # The first output after a quiet spell goes out at once (a quick cell's answer
            # should not wait); a burst is then written every KERNEL_FLUSH_INTERVAL.
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._batch.flushed_at + settings.KERNEL_FLUSH_INTERVAL - loop.time())
            self._batch.handle = loop.call_later(delay, lambda: self._spawn(self._flush()))

    async def _flush(self) -> None:
        """Write the collected outputs into the document in one edit."""
        if self._batch.handle is not None:
            self._batch.handle.cancel()
            self._batch.handle = None
        events, self._batch.events = self._batch.events, []
        if not events:
            return
        self._batch.flushed_at = asyncio.get_running_loop().time()

        def apply(doc: Doc) -> None:
            assert self.writer is not None
            for cell_id, event in events:
                self.writer.apply(cell_id, event.msg)

        await self._edit(apply, within=0)  # someone is waiting for this

    async def _echo(self, cell_id: str, name: str, text: str) -> None:
        """A stream output written by the bridge itself (the answer to a prompt, a notice)."""
        await self._flush()
        msg = {"header": {"msg_type": "stream"}, "content": {"name": name, "text": text}}

        def apply(doc: Doc) -> None:
            assert self.writer is not None
            self.writer.apply(cell_id, msg)

        await self._edit(apply)
