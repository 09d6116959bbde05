"""Fault injection for tests with real processes: a TCP proxy that can refuse and cut
database connections, a y-websocket client that reconnects like the browser's provider, and
waiting until the database holds everything the typists typed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import websockets

from tests.support.processes import Stack, free_port
from tests.support.waiting import eventually_async
from tests.support.yclient import YClient


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target, in its own thread and event loop (the test's
    loop blocks in `Stack.django()`). `refuse(s)` cuts every connection and drops new ones
    for `s` seconds; `cut()` only cuts the existing ones; `hang(s)` forwards nothing for `s`
    seconds, neither answering nor refusing (a network that drops packets), then goes on."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = free_port()
        self.refusing_until = 0.0
        self.hanging_until = 0.0
        self.accepted = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        serving = asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._server = self._loop.run_until_complete(serving)
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        if time.monotonic() < self.refusing_until:
            writer.transport.abort()
            return
        await self._while_hanging()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            hold = self._while_hanging
            await asyncio.gather(_pipe(reader, up_writer, hold), _pipe(up_reader, writer, hold))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.transport.abort()

    def _cut(self) -> None:
        for pair in list(self._pairs):
            for w in pair:
                w.transport.abort()

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._cut)

    async def _while_hanging(self) -> None:
        while (left := self.hanging_until - time.monotonic()) > 0:
            await asyncio.sleep(left)

    def hang(self, seconds: float) -> None:
        self.hanging_until = time.monotonic() + seconds

    def refuse(self, seconds: float) -> None:
        self.refusing_until = time.monotonic() + seconds
        self.cut()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._cut)
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            await hold()
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


class Typist:
    """One person typing numbered tokens into a notebook through one worker after another:
    like y-websocket's provider, it keeps its document and reconnects after a close, and the
    first sync sends what the server does not hold yet."""

    def __init__(self, ports: list[int], notebook_id: str, cookie: str, tag: str):
        self.ports, self.notebook_id, self.cookie, self.tag = ports, notebook_id, cookie, tag
        self.client = YClient(self._send)
        self.ws = None
        self.typed = 0
        self.closes: list[tuple[int | None, str]] = []
        self._connected = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _send(self, frame: bytes) -> None:
        if self.ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.ws.send(frame)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 15)
        await asyncio.wait_for(self.client.synced.wait(), 15)

    async def _run(self) -> None:
        attempt = 0
        while True:
            port = self.ports[attempt % len(self.ports)]
            try:
                self.ws = await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws/notebooks/{self.notebook_id}?ext=1",
                    additional_headers={"Cookie": self.cookie, "Origin": f"http://127.0.0.1:{port}"},
                    max_size=None,
                    open_timeout=5,
                )
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                attempt += 1
                await asyncio.sleep(0.2)
                continue
            self._connected.set()
            await self.client.start()
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in self.ws:
                    await self.client.handle(frame)
            self.closes.append((self.ws.close_code, self.ws.close_reason or ""))
            self.ws = None
            attempt += 1
            await asyncio.sleep(0.1)

    async def type(self) -> None:
        text = self.client.text()
        text.insert(len(str(text).encode()), f"<{self.tag}{self.typed}>")
        self.typed += 1
        if self.ws is not None:
            await self.client.flush()
        else:  # offline: keep it in the document; the next sync sends it
            self.client._outbox.clear()

    def tokens(self) -> list[str]:
        return [f"<{self.tag}{i}>" for i in range(self.typed)]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.ws is not None:
            await self.ws.close()


async def type_for(typists: list[Typist], seconds: float, every: float = 0.05) -> None:
    """Each typist types a token every `every` s for `seconds` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for t in typists:
            await t.type()
        await asyncio.sleep(every)


async def all_saved(stack: Stack, notebook_id: str, typists: list[Typist], timeout: float = 40) -> str:
    """Wait until the database holds every token typed; return its text."""
    wanted = [token for t in typists for token in t.tokens()]
    missing = wanted

    async def stored_all() -> str | None:
        nonlocal missing
        stored = await asyncio.to_thread(stack.stored_source, notebook_id)
        missing = [token for token in wanted if token not in stored]
        return None if missing else stored

    try:
        return await eventually_async(stored_all, timeout=timeout, what="every edit to be saved", every=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}: {len(missing)} of {len(wanted)} never were, e.g. {missing[:5]}") from None
