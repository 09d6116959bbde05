"""Load-generator side of the real-time benchmark: a cheap websocket client and y-websocket framing.

The client is websockets' Sans-I/O protocol driven by a plain asyncio.Protocol: a received frame
is handed to a callback straight from `data_received`, timestamped there, with no task switch
and no queue, so one process can hold a few hundred sockets without becoming the bottleneck.
Nothing here knows which server it talks to.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from pycrdt import Array, Doc, Text
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

OnMessage = Callable[[bytes, int], None]  # frame, monotonic ns when it arrived

SYNC, STEP1, STEP2, UPDATE = 0, 0, 1, 2
EMPTY_STATE_VECTOR = b"\x00"
EMPTY_UPDATE = b"\x00\x00"


# y-websocket framing (docs/architecture.md, "The websocket")


def var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7


def sync_frame(subtype: int, payload: bytes) -> bytes:
    return bytes([SYNC, subtype]) + var_uint(len(payload)) + payload


def parse_sync(frame: bytes) -> tuple[int, bytes] | None:
    """(subtype, payload) of a sync frame, None for any other message type."""
    if not frame or frame[0] != SYNC:
        return None
    length, pos = read_var_uint(frame, 2)
    return frame[1], bytes(frame[pos : pos + length])


# the websocket


class WSClient(asyncio.Protocol):
    def __init__(self, url: str, headers: dict[str, str], on_message: OnMessage | None = None):
        loop = asyncio.get_running_loop()
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.headers = headers
        self.on_message = on_message or (lambda frame, t: None)
        self.opened: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None
        self._parts: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        request = self.ws.connect()
        for name, value in self.headers.items():
            request.headers[name] = value
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is None:
                    self.opened.set_result(now)
                else:
                    self.opened.set_exception(self.ws.handshake_exc)
            elif event.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                self._parts.append(event.data)
                if event.fin:
                    frame = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                    self._parts = []
                    self.on_message(frame, now)
            elif event.opcode is Opcode.CLOSE:
                self.close_code = self.ws.close_code
        self._flush()

    def eof_received(self) -> bool:
        self.ws.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def send(self, frame: bytes) -> None:
        if not self.closed.done():
            self.ws.send_binary(frame)
            self._flush()

    async def close(self, timeout: float = 2.0) -> None:
        if self.closed.done():
            return
        try:
            self.ws.send_close(1000)
            self._flush()
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except Exception:
            pass
        if self.transport is not None:
            self.transport.close()


async def connect(
    url: str,
    headers: dict[str, str],
    on_message: OnMessage | None = None,
    owner=None,
    timeout: float = 20.0,
) -> WSClient:
    """Open a websocket. `owner.ws` is set before any frame arrives: the server's first frame
    can come in the same read as the handshake response, and the owner may have to answer it."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()

    def protocol() -> WSClient:
        client = WSClient(url, headers, on_message)
        if owner is not None:
            owner.ws = client
        return client

    _, client = await asyncio.wait_for(loop.create_connection(protocol, uri.host, uri.port), timeout)
    await asyncio.wait_for(client.opened, timeout)
    return client


# clients with a role in the benchmark


class YClient:
    """A y-websocket client holding a Doc, like a browser tab: answers step1, applies updates.
    `extra` sees every frame too (the writers scan it for their own markers); with
    `follow=False` the client stops applying updates once synced (a blaster only appends)."""

    def __init__(self, extra: OnMessage | None = None, follow: bool = True):
        self.doc = Doc()
        self.follow = follow
        self.synced = asyncio.get_running_loop().create_future()
        self.extra = extra
        self.ws: WSClient | None = None

    async def open(self, url: str, headers: dict[str, str]) -> YClient:
        await connect(url, headers, self._on_message, owner=self)
        self.ws.send(sync_frame(STEP1, self.doc.get_state()))
        return self

    def _on_message(self, frame: bytes, t: int) -> None:
        sync = parse_sync(frame)
        if sync is not None:
            subtype, payload = sync
            if subtype == STEP1:
                self.ws.send(sync_frame(STEP2, self.doc.get_update(payload)))
            elif self.follow or not self.synced.done():
                self.doc.apply_update(payload)
                if subtype == STEP2 and not self.synced.done():
                    self.synced.set_result(t)
        if self.extra is not None:
            self.extra(frame, t)

    def send_update(self, update: bytes) -> int:
        """Send a Yjs update; return the monotonic ns just before it went to the socket."""
        t = time.monotonic_ns()
        self.ws.send(sync_frame(UPDATE, update))
        return t

    def append_to_first_cell(self, text: str) -> bytes:
        before = self.doc.get_state()
        source: Text = self.doc.get("cells", type=Array)[0]["source"]
        source += text
        return self.doc.get_update(before)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


MARKER = re.compile(rb"#(\w+)w(\d+):(\d+):(\d+);")


def marker(tag: str, writer: int, seq: int) -> str:
    """A unique string a writer types; it carries its send time, so any process can time it."""
    return f"#{tag}w{writer}:{seq}:{time.monotonic_ns()};"


class Observer:
    """A cheap reader: no Doc, it answers the server's step1 like an empty client and times
    every marker of the current scenario that appears in an incoming sync frame."""

    def __init__(self, tag: bytes, latencies: list[float]):
        self.tag = tag
        self.latencies = latencies
        self.seen: set[tuple[bytes, bytes]] = set()
        self.ws: WSClient | None = None

    async def open(self, url: str, headers: dict[str, str]) -> Observer:
        await connect(url, headers, self._on_message, owner=self)
        self.ws.send(sync_frame(STEP1, EMPTY_STATE_VECTOR))
        return self

    def _on_message(self, frame: bytes, t: int) -> None:
        if not frame or frame[0] != SYNC:
            return
        if frame[1] == STEP1:
            self.ws.send(sync_frame(STEP2, EMPTY_UPDATE))
            return
        for tag, writer, seq, sent in MARKER.findall(frame):
            if tag == self.tag and (writer, seq) not in self.seen:
                self.seen.add((writer, seq))
                self.latencies.append((t - int(sent)) / 1e6)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
