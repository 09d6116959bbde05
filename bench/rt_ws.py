"""Load-generator side of the real-time benchmark: a cheap websocket client and y-websocket framing.

The client is a minimal RFC 6455 client under a plain asyncio.Protocol: it writes the upgrade
request itself, checks the 101 answer, and then parses the server's (unmasked) frames with a
few slices, no parser object per frame. A received message is handed to a callback straight
from `data_received`, timestamped there, with no task switch and no queue, so one process can
hold a thousand sockets cheaply (12-17 µs of CPU per frame received; websockets' Sans-I/O
protocol, used before, cost 24-47 µs). Nothing here knows which server it talks to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import os
import re
import struct
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from pycrdt import Array, Doc, Text

OnMessage = Callable[[bytes, int], None]  # frame, monotonic ns when it arrived

SYNC, STEP1, STEP2, UPDATE = 0, 0, 1, 2
EMPTY_STATE_VECTOR = b"\x00"
EMPTY_UPDATE = b"\x00\x00"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10


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


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, unfragmented client frame."""
    n = len(payload)
    if n <= 125:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    if not n:
        return header + mask
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return header + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class WSClient(asyncio.Protocol):
    def __init__(self, url: str, headers: dict[str, str], on_message: OnMessage | None = None):
        loop = asyncio.get_running_loop()
        self.url = urlsplit(url)
        self.headers = headers
        self.on_message = on_message or (lambda frame, t: None)
        self.opened: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.transport: asyncio.Transport | None = None
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = b""
        self._parts: list[bytes] = []
        self._upgraded = False
        self._close_sent = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        path = (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.url.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key.decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            self._handshake(buffer[:end], now)
            buffer = buffer[end + 4 :]
            if not self._upgraded:
                return
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            n, start = b1 & 0x7F, pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                (n,) = struct.unpack_from("!H", buffer, pos + 2)
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buffer, pos + 2)
                start = pos + 10
            if size - start < n:
                break
            payload = buffer[start : start + n]
            pos = start + n
            self._frame(b0 & 0x0F, bool(b0 & 0x80), payload, now)
        self._buffer = buffer[pos:] if pos < size else b""

    def _handshake(self, head: bytes, now: int) -> None:
        status, *lines = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        accept = base64.b64encode(hashlib.sha1(self._key + WS_GUID).digest()).decode()
        if status.split(" ")[1:2] == ["101"] and fields.get("sec-websocket-accept") == accept:
            self._upgraded = True
            self.opened.set_result(now)
        else:
            self.opened.set_exception(ConnectionError(f"websocket refused: {status}"))
            self.transport.close()

    def _frame(self, opcode: int, fin: bool, payload: bytes, now: int) -> None:
        if opcode in (BINARY, TEXT, CONT):
            if fin and not self._parts:
                self.on_message(payload, now)
                return
            self._parts.append(payload)
            if fin:
                frame = b"".join(self._parts)
                self._parts = []
                self.on_message(frame, now)
        elif opcode == PING:
            self._write(client_frame(PONG, payload))
        elif opcode == CLOSE:
            if len(payload) >= 2:
                self.close_code = struct.unpack_from("!H", payload)[0]
                self.close_reason = payload[2:].decode(errors="replace")
            else:
                self.close_code = 1005
            if not self._close_sent:
                self._close_sent = True
                self._write(client_frame(CLOSE, payload[:2]))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, frame: bytes) -> None:
        if not self.closed.done() and not self._close_sent:
            self._write(client_frame(BINARY, frame))

    async def close(self, timeout: float = 2.0) -> None:
        if self.closed.done():
            return
        try:
            if not self._close_sent:
                self._close_sent = True
                self._write(client_frame(CLOSE, struct.pack("!H", 1000)))
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
    uri = urlsplit(url)
    loop = asyncio.get_running_loop()

    def protocol() -> WSClient:
        client = WSClient(url, headers, on_message)
        if owner is not None:
            owner.ws = client
        return client

    _, client = await asyncio.wait_for(loop.create_connection(protocol, uri.hostname, uri.port), timeout)
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

    def replace_first_cell(self, text: str) -> bytes:
        """The first cell's source becomes `text`: the document stays the same size."""
        before = self.doc.get_state()
        source: Text = self.doc.get("cells", type=Array)[0]["source"]
        with self.doc.transaction():
            if len(source):
                del source[0 : len(source)]
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
        self.frames = 0  # sync frames other than step1 received
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
        self.frames += 1
        for tag, writer, seq, sent in MARKER.findall(frame):
            if tag == self.tag and (writer, seq) not in self.seen:
                self.seen.add((writer, seq))
                self.latencies.append((t - int(sent)) / 1e6)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


@contextlib.contextmanager
def no_collector_pauses():
    """The load generator's own garbage collector off while it times: its heap (1,000 sockets,
    or a pycrdt Doc per room) made full collections of 250-700 ms on 2 slow cores, during which
    no arrival was stamped, and every frame that came meanwhile counted the pause as the
    server's latency. Separate browsers would not pause together. What was there before is set
    aside (`gc.freeze`); garbage made meanwhile is collected afterwards."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def observe_in_child(conn, url: str, headers: dict[str, str], tag: bytes, count: int) -> None:
    """A process of observers (`multiprocessing`, spawn): opens `count` of them, says
    ("ready", pid), and on ("go",) starts counting frames; on ("stop", updates, seconds) waits up
    to `seconds` for every observer to have seen `updates` markers and answers
    ("done", latencies, frames). Observers in several processes time arrivals on all cores, as
    separate browsers would; the markers carry CLOCK_MONOTONIC, shared by every process."""
    asyncio.run(_observe(conn, url, headers, tag, count))


async def _observe(conn, url: str, headers: dict[str, str], tag: bytes, count: int) -> None:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    watching: list[Observer] = []
    try:
        for start in range(0, count, 50):  # in waves: a burst of handshakes is not the test
            batch = [Observer(tag, latencies).open(url, headers) for _ in range(min(50, count - start))]
            watching += await asyncio.gather(*batch)
        with no_collector_pauses():
            conn.send(("ready", os.getpid()))
            await loop.run_in_executor(None, conn.recv)  # ("go",)
            frames_before = sum(o.frames for o in watching)
            _, updates, seconds = await loop.run_in_executor(None, conn.recv)
            deadline = time.monotonic() + seconds
            while len(latencies) < updates * count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        conn.send(("done", latencies, sum(o.frames for o in watching) - frames_before))
    finally:
        for observer in watching:
            await observer.close()
