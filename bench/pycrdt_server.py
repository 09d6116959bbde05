"""The comparison server: pycrdt-websocket (the engine under jupyter-collaboration), one process.

    cd bench && PYCRDT_BENCH_STORE=/tmp/ystore.db python -m daphne -p 8765 pycrdt_server:application

`pycrdt.websocket.ASGIServer(WebsocketServer)` with rooms keyed by the URL path. Like
jupyter-collaboration, every room has an `SQLiteYStore` (all rooms in one SQLite file): a room
is loaded from the store when its first client joins, every update is written to the store,
the room is dropped when its last client leaves, and a send to a client that is already gone
is dropped, as jupyter-collaboration's websocket handler does. There is no cross-process
fan-out: one process serves every room. Served by daphne, the same ASGI server as the app, so that the
transport is not what differs; daphne has no lifespan events, so the websocket server starts
with the first connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from pycrdt.store import SQLiteYStore
from pycrdt.store.base import YDocNotFound
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom, exception_logger

log = logging.getLogger("pycrdt_bench")


class Store(SQLiteYStore):
    db_path = os.environ.get("PYCRDT_BENCH_STORE", "ystore.db")


class StoredRoomsServer(WebsocketServer):
    """Rooms backed by the store; concurrent first joiners wait for the load to finish."""

    def __init__(self) -> None:
        super().__init__(rooms_ready=False, exception_handler=exception_logger, log=log)
        self._loading: dict[str, asyncio.Event] = {}

    async def get_room(self, name: str) -> YRoom:
        while name in self._loading:
            await self._loading[name].wait()
        if name in self.rooms:
            return self.rooms[name]
        self._loading[name] = done = asyncio.Event()
        try:
            store = Store(path=name, log=log)
            room = YRoom(ready=False, ystore=store, exception_handler=exception_logger, log=log)
            self.rooms[name] = room
            await self.start_room(room)  # starts the store in the room's task group
            await store.started.wait()
            with contextlib.suppress(YDocNotFound):  # a room nobody has written to yet
                await store.apply_updates(room.ydoc)
            room.ready = True  # from now on the room's Doc changes are broadcast and stored
            return room
        finally:
            del self._loading[name]
            done.set()


websocket_server = StoredRoomsServer()
_asgi = ASGIServer(websocket_server)
_started: asyncio.Task | None = None


async def application(scope, receive, send):
    global _started
    if _started is None:
        _started = asyncio.create_task(websocket_server.start())
    await websocket_server.started.wait()

    async def send_or_drop(message) -> None:
        """A send to a client that has just gone raises; left alone, it takes down the room's task
        group and with it the whole WebsocketServer. jupyter-collaboration's handler catches and
        logs these too (`YDocWebSocketHandler.send`)."""
        try:
            await send(message)
        except Exception:
            if message.get("type") != "websocket.send":
                raise
            log.debug("dropped a message to a closed websocket")

    await _asgi(scope, receive, send_or_drop)
