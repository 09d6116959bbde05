"""A minimal y-websocket client on pycrdt, for tests and benchmarks: it speaks the same frames as
the npm `WebsocketProvider` (sync step1/step2/update, awareness). `CommunicatorClient` drives the
ASGI application in-process; `WsClient` (`open_client`) talks to a real worker over a socket."""

from __future__ import annotations

import asyncio
import json

import websockets
from pycrdt import Array, Doc, Map, Text

from collab import protocol
from collab.protocol import MessageType, SyncType
from tests.support.waiting import eventually_async


class YClient:
    def __init__(self, send, doc: Doc | None = None):
        self._send = send  # async callable(bytes)
        self.doc = doc or Doc()
        self.cells = self.doc.get("cells", type=Array)
        self.meta = self.doc.get("meta", type=Map)
        self.synced = asyncio.Event()
        self.denied: list[str] = []
        self.awareness: dict[int, dict] = {}
        self.saved_sv: bytes | None = None
        self.session: dict | None = None
        self.replies: dict = {}  # command id -> {"status", "body"}
        self.kernel: dict | None = None
        self._outbox: list[bytes] = []
        self._remote = False
        self.doc.observe(self._on_update)

    def _on_update(self, event) -> None:
        if not self._remote:
            self._outbox.append(event.update)

    async def flush(self) -> None:
        while self._outbox:
            await self._send(protocol.sync_update(self._outbox.pop(0)))

    async def start(self) -> None:
        await self._send(protocol.sync_step1(self.doc.get_state()))

    async def handle(self, frame: bytes) -> None:
        reader = protocol.Reader(frame)
        kind = reader.var_uint()
        if kind == MessageType.SYNC:
            sub = reader.var_uint()
            payload = reader.var_bytes()
            if sub == SyncType.STEP1:
                await self._send(protocol.sync_step2(self.doc.get_update(payload)))
            else:
                self._remote = True
                try:
                    self.doc.apply_update(payload)
                finally:
                    self._remote = False
                if sub == SyncType.STEP2:
                    self.synced.set()
        elif kind == MessageType.AWARENESS:
            for client, _clock, state in protocol.parse_awareness(reader.var_bytes()):
                if state == "null":
                    self.awareness.pop(client, None)
                else:
                    self.awareness[client] = json.loads(state)
        elif kind == MessageType.AUTH:
            reader.var_uint()
            self.denied.append(reader.var_string())
        elif kind == MessageType.SAVED:
            self.saved_sv = reader.var_bytes()
        elif kind == MessageType.SESSION:
            self.session = json.loads(reader.var_string())
        elif kind == MessageType.KERNEL:
            self.kernel = json.loads(reader.var_string())
        elif kind == MessageType.COMMAND_REPLY:
            reply = json.loads(reader.var_string())
            self.replies[reply["id"]] = reply

    async def set_awareness(self, state: dict, clock: int = 1, client_id: int | None = None) -> None:
        entry = (client_id or self.doc.client_id, clock, json.dumps(state))
        await self._send(protocol.awareness(protocol.encode_awareness([entry])))

    def source(self, index: int = 0) -> str:
        return str(self.cells[index]["source"])

    def text(self, index: int = 0) -> Text:
        return self.cells[index]["source"]


class CommunicatorClient(YClient):
    """YClient over channels' WebsocketCommunicator."""

    closed: dict | None = None

    def __init__(self, communicator, doc: Doc | None = None):
        self.comm = communicator
        super().__init__(lambda data: communicator.send_to(bytes_data=data), doc)

    async def wait_closed(self, timeout: float = 10.0) -> dict:
        """Handle frames until the server closes the socket; the close message."""

        async def closed() -> dict | None:
            if self.closed is None:
                await self.pump(0.1)
            return self.closed

        return await eventually_async(closed, timeout=timeout, what="the server to close the socket", every=0)

    async def pump_until(self, done, timeout: float = 15.0, what: str = "the condition") -> None:
        """Handle frames until `done()` holds (a busy machine may need more than one `pump`)."""

        async def holds() -> bool:
            if done():
                return True
            if self.closed is not None:
                raise AssertionError(f"the server closed the socket while waiting for {what}: {self.closed}")
            await self.pump(0.05)
            return done()

        await eventually_async(holds, timeout=timeout, what=what, every=0)

    async def pump(self, timeout: float = 0.2) -> int:
        """Handle frames until none arrives within `timeout`; return how many."""
        n = 0
        while True:
            # receive_output() cancels the application on timeout; receive_nothing() does not.
            if await self.comm.receive_nothing(timeout):
                return n
            message = await self.comm.receive_output()
            if message["type"] == "websocket.close":
                self.closed = message
                return n
            if message.get("bytes") is not None:
                await self.handle(message["bytes"])
                n += 1


class WsClient(YClient):
    """YClient over a real websocket to a worker; a task reads and handles its frames."""

    def __init__(self, ws):
        self.ws = ws
        super().__init__(ws.send)
        self.received = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for frame in self.ws:
                self.received += 1
                await self.handle(frame)
        except websockets.ConnectionClosed:
            pass


async def connect(port: int, notebook_id: str, cookie: str) -> websockets.asyncio.client.ClientConnection:
    """A bare websocket to the notebook on the worker on `port`, signed in with `cookie`."""
    return await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/notebooks/{notebook_id}",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        max_size=None,
    )


async def open_client(port: int, notebook_id: str, cookie: str) -> WsClient:
    """A client of the worker on `port`, signed in with `cookie`, after its first sync."""
    ws = await connect(port, notebook_id, cookie)
    client = WsClient(ws)
    await client.start()
    await asyncio.wait_for(client.synced.wait(), 10)
    return client


async def settle(clients, timeout: float = 15) -> None:
    """Wait until every client holds the same document."""
    try:
        await eventually_async(
            lambda: len({c.source() for c in clients}) == 1, timeout=timeout, what="the clients to converge"
        )
    except AssertionError as e:
        raise AssertionError(f"{e}; their lengths: {[len(c.source()) for c in clients]}") from None
