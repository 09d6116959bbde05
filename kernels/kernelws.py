"""One websocket to a kernel's channels (the legacy JSON protocol that Jupyter Server and Kernel
Gateway both accept). Runs in the event loop; never blocks. The rules are `kernels.jupyter`'s:
one session id for a connection's whole life (reconnecting with it replays what the server
buffered), shell requests held until iopub answers a probe, a frame over `KERNEL_MAX_FRAME_BYTES`
is never read (it closes the connection, which reopens; the running cell is told), errors are
`KernelServerError`'s fixed sentences.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import websockets
from django.conf import settings
from websockets.asyncio.client import ClientConnection

from kernels import netguard
from kernels.errors import KernelGone, KernelServerError
from kernels.execution import Event, ExecutionTracker, KernelLost, message_type

PROTOCOL_VERSION = "5.3"
MB = 1 << 20

log = logging.getLogger(__name__)


def _restarted_by_server(msg: dict[str, Any]) -> bool:
    """The server's own `restarting` status: it restarted a kernel that died."""
    if msg.get("channel") != "iopub" or message_type(msg) != "status":
        return False
    return (msg.get("content") or {}).get("execution_state") == "restarting"


def output_too_large(msg_id: str, size: int, limit: int) -> dict[str, Any]:
    """An error output for the execution `msg_id`, in place of one of `size` bytes not kept."""
    message = f"Output of {_size(size)} exceeds the limit of {_size(limit)} and was not kept."
    content = {
        "ename": "OutputTooLarge",
        "evalue": message,
        "traceback": [f"\x1b[0;31mOutputTooLarge\x1b[0m: {message}"],
    }
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "error"}
    return {"channel": "iopub", "header": header, "parent_header": {"msg_id": msg_id}, "content": content}


def _size(size: int) -> str:
    """Bytes as people read them (binary units): 48 MB, 40.5 MB, 20 KB."""
    if size >= MB:
        return f"{size / MB:.1f}".removesuffix(".0") + " MB"
    return f"{max(1, round(size / 1024))} KB"


def decode_frame(frame: str | bytes) -> dict[str, Any]:
    """A legacy-protocol frame: JSON text, or binary `nbufs, offsets..., json, buffers...`."""
    if isinstance(frame, str):
        return dict(json.loads(frame))
    (nbufs,) = struct.unpack("!I", frame[:4])
    offsets = [*struct.unpack(f"!{nbufs}I", frame[4 : 4 * (nbufs + 1)]), len(frame)]
    parts = [frame[a:b] for a, b in itertools.pairwise(offsets)]
    msg = dict(json.loads(parts[0].decode("utf-8")))
    msg["buffers"] = parts[1:]
    return msg


class KernelChannels:
    """One websocket to a kernel's channels: send requests, iterate over incoming messages.

    `events()` runs the messages through an `ExecutionTracker`; `execute()` registers the
    request with it. Reconnection (same session id) happens inside `messages()` when the socket
    drops, up to `reconnect_attempts` times; a kernel that is gone raises `KernelGone`.
    """

    def __init__(
        self,
        client: Any,  # the kernels.jupyter.JupyterClient it belongs to
        kernel_id: str,
        session_id: str,
        *,
        username: str = "notebook-bridge",
        reconnect_attempts: int = 5,
        reconnect_delay: float = 0.2,
    ) -> None:
        self.client = client
        self.kernel_id = kernel_id
        self.session_id = session_id
        self.username = username
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.tracker = ExecutionTracker()
        self._ws: ClientConnection | None = None
        self._closed = False
        # After a restart: shell requests wait here until iopub reaches us again (see restart)
        self._held: list[dict[str, Any]] | None = None
        self._probe_ids: set[str] = set()  # probes sent on this connection
        self._asks: dict[str, asyncio.Future[dict[str, Any]]] = {}  # msg_id -> its shell reply's content
        self._probing_since = 0.0
        self._gap: tuple[str, ...] = ()  # executions whose messages a dropped frame may have taken
        self._restarting = False  # a restart through REST is under way (see `restart`)
        self._probe_interval = settings.KERNEL_PROBE_INTERVAL
        # Set when the kernel answers a probe sent on this connection: it has then handled every
        # shell request sent before (a run a previous connection left in flight included).
        self.iopub_answered = asyncio.Event()

    async def __aenter__(self) -> KernelChannels:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect (again) with this session id."""
        url = self.client.channels_url(self.kernel_id, self.session_id)
        self._closed = False
        if self._ws is not None:
            return
        try:
            self._ws = await websockets.connect(
                url,
                additional_headers=self.client.headers,
                max_size=settings.KERNEL_MAX_FRAME_BYTES,
                compression=None,
                open_timeout=settings.KERNEL_CONNECT_TIMEOUT,
                ping_interval=20,
                ping_timeout=60,
                **await self._pinned_target(),
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            if status == 404:
                raise KernelGone("The kernel is gone from its server.") from None
            raise KernelServerError(
                f"The kernel server answered {status} when connecting to the kernel."
            ) from None
        except netguard.Refused as exc:
            raise KernelServerError(str(exc)) from None
        except (OSError, websockets.WebSocketException, TimeoutError):
            raise KernelServerError(
                "The kernel server could not be reached when connecting to the kernel."
            ) from None
        self._probe_ids.clear()
        self.iopub_answered.clear()
        # The server subscribes this socket to iopub as it opens, and skips its own check
        # ("nudge") when it believes the kernel busy: a run sent at once could lose its busy
        # and idle statuses and never finish. Hold shell requests until iopub answers.
        await self._hold_until_iopub()

    async def _pinned_target(self) -> dict[str, Any]:
        """For a pinned client: connect to the address just checked (the URL still gives the
        Host header and the TLS server name), never through a proxy."""
        if not self.client.pinned:
            return {}
        address = await netguard.pinned_address(self.client.base_url)
        return {"host": address, "port": netguard.origin(self.client.base_url)[2], "proxy": None}

    async def close(self) -> None:
        """Close for good; the server then buffers output for this session id."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def disconnect(self) -> None:
        """Drop the socket but stay usable: `messages()` reopens it with the same session id
        (and the server replays what it buffered meanwhile). Simulates a network failure."""
        if self._ws is not None:
            await self._ws.close()

    async def interrupt(self) -> None:
        await self.client.interrupt_kernel(self.kernel_id)

    async def restart(self) -> KernelLost | None:
        """Restart through REST. The server sends no `restarting` status for a restart it was
        asked for, so the executions sent before it are reported lost here. Shell requests sent
        while the server restarts the kernel are held (not lost) and go to the new kernel once
        its iopub answers; probes sent to the old kernel no longer count as its answer."""
        before = self.tracker.abandon("restarting")
        if self._held is None:
            self._held = []
        elif before is not None:  # held, never sent: must not run on the new kernel
            self._held = [m for m in self._held if m["header"]["msg_id"] not in before.msg_ids]
        self._restarting = True
        self._probe_ids.clear()
        try:
            await self.client.restart_kernel(self.kernel_id)
        finally:
            self._restarting = False
        await self._hold_until_iopub()
        return before

    async def _hold_until_iopub(self) -> None:
        """After a restart (asked for, or the server's own after a crash) the server's iopub
        subscription for this socket reconnects to the new kernel by itself, some time later
        (ZeroMQ's reconnect interval): output published before then never reaches us, and an
        execution whose `idle` status is lost never finishes. So shell requests are held back
        until a `kernel_info_request` probe's status comes back on iopub (probing every
        KERNEL_PROBE_INTERVAL, as the Jupyter Server's own "nudge" does on connect). The messages
        iterator does the waiting; nothing waits here."""
        if self._held is None:
            self._held = []
        self._probing_since = time.monotonic()
        self._probe_interval = settings.KERNEL_PROBE_INTERVAL
        await self._probe()

    async def _probe(self) -> None:
        msg = self.make_message("kernel_info_request", {})
        self._probe_ids.add(str(msg["header"]["msg_id"]))
        await self._send_now("shell", msg)

    def _answers_probe(self, msg: dict[str, Any], channel: str = "iopub") -> bool:
        parent = (msg.get("parent_header") or {}).get("msg_id")
        return msg.get("channel") == channel and parent in self._probe_ids

    async def _probe_again(self) -> None:
        if self._restarting:  # the old kernel's answer would not tell us the new one's iopub is up
            return
        if time.monotonic() - self._probing_since > settings.KERNEL_PROBE_GIVE_UP:
            await self._release_held()  # the kernel does not answer: let its requests fail as they may
        else:
            self._probe_interval = min(self._probe_interval * 2, settings.KERNEL_PROBE_MAX_INTERVAL)
            await self._probe()

    async def _release_held(self) -> None:
        held, self._held = self._held or [], None
        for index, msg in enumerate(held):
            try:
                await self._send_now("shell", msg)
            except (websockets.ConnectionClosed, KernelServerError):
                self._held = held[index:]  # not sent: the next connection sends them (see `open`)
                raise

    def make_message(
        self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "header": {
                "msg_id": uuid.uuid4().hex,
                "msg_type": msg_type,
                "username": self.username,
                "session": self.session_id,
                "date": datetime.now(UTC).isoformat(),
                "version": PROTOCOL_VERSION,
            },
            "parent_header": parent or {},
            "metadata": {},
            "content": content,
            "buffers": [],
        }

    async def send(self, channel: str, msg: dict[str, Any]) -> str:
        if self._held is not None and channel == "shell":  # just restarted: see `restart`
            self._held.append(msg)
            return str(msg["header"]["msg_id"])
        return await self._send_now(channel, msg)

    async def _send_now(self, channel: str, msg: dict[str, Any]) -> str:
        if self._ws is None:
            raise KernelServerError("The connection to the kernel is not open.")
        await self._ws.send(json.dumps({**msg, "channel": channel}))
        return str(msg["header"]["msg_id"])

    async def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        store_history: bool = True,
        allow_stdin: bool = False,
        stop_on_error: bool = True,
    ) -> str:
        """Send an `execute_request`; returns its msg_id (outputs carry it as parent)."""
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            "stop_on_error": stop_on_error,
        }
        msg = self.make_message("execute_request", content)
        self.tracker.track(msg["header"]["msg_id"])
        return await self.send("shell", msg)

    async def send_input_reply(self, value: str, parent: dict[str, Any] | None = None) -> str:
        """Answer an `input_request` (`parent`: its header, when known)."""
        msg = self.make_message("input_reply", {"value": value}, parent)
        return await self.send("stdin", msg)

    async def ask(self, msg_type: str, content: dict[str, Any], within: float) -> dict[str, Any]:
        """A shell request with one reply (complete, inspect): the reply's content; TimeoutError
        if the kernel does not answer in time (it answers after the running cell)."""
        msg = self.make_message(msg_type, content)
        msg_id = msg["header"]["msg_id"]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asks[msg_id] = future
        try:
            await self.send("shell", msg)
            return await asyncio.wait_for(future, within)
        finally:
            self._asks.pop(msg_id, None)

    def _answer_ask(self, msg: dict[str, Any]) -> None:
        parent_id = (msg.get("parent_header") or {}).get("msg_id", "")
        future = self._asks.get(parent_id) if msg.get("channel") == "shell" else None
        if future is not None and not future.done():
            future.set_result(msg.get("content") or {})

    async def kernel_info(self) -> str:
        return await self.send("shell", self.make_message("kernel_info_request", {}))

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every incoming message (with its `channel`), reconnecting with the same session id."""
        while not self._closed:
            if self._ws is None:
                await self._reopen()
            ws = self._ws
            if ws is None:
                continue
            too_big = None
            try:
                while True:
                    if self._held is None:
                        frame = await ws.recv()
                    else:
                        try:
                            frame = await asyncio.wait_for(ws.recv(), self._probe_interval)
                        except TimeoutError:
                            await self._probe_again()
                            continue
                    msg = decode_frame(frame)
                    if self._answers_probe(msg):
                        self.iopub_answered.set()
                        if self._held is not None:
                            await self._release_held()
                    elif _restarted_by_server(msg):
                        await self._hold_until_iopub()
                    yield msg
            except websockets.ConnectionClosed as exc:
                too_big = exc.__cause__ if isinstance(exc.__cause__, websockets.PayloadTooBig) else None
            if self._ws is ws:
                self._ws = None
            if too_big is not None:
                notice = self._dropped_frame(too_big)
                if notice is not None:
                    yield notice

    def _dropped_frame(self, exc: websockets.PayloadTooBig) -> dict[str, Any] | None:
        """A frame over KERNEL_MAX_FRAME_BYTES closed the connection unread, and what the server
        sent behind it is lost too (an `idle`, a reply): the executions pending now are settled
        once a probe sent on the next connection is answered (`events`). The one running (the
        oldest: one runs at a time) is told, as an error output from its kernel."""
        size = exc.size if exc.size is not None else exc.max_size
        log.warning("kernel %s sent a frame of %d bytes, over the limit; not read", self.kernel_id, size)
        self._gap = self.tracker.pending
        return output_too_large(self._gap[0], size, exc.max_size) if self._gap else None

    async def events(self) -> AsyncIterator[Event]:
        """Execution events (see `kernels.execution`) for the messages as they arrive."""
        async for msg in self.messages():
            self._answer_ask(msg)
            for event in self.tracker.feed(msg):
                yield event
            # A reply on shell comes after the replies to every request sent before it.
            if self._gap and self._answers_probe(msg, "shell"):
                gap, self._gap = self._gap, ()
                for event in self.tracker.settle(gap):
                    yield event

    def abandon(self, state: str = "restarting") -> KernelLost | None:
        """Fail every pending execution (e.g. when giving up on this kernel)."""
        return self.tracker.abandon(state)

    async def _reopen(self) -> None:
        """Reopen after a drop: a kernel that is gone raises `KernelGone`, a server that stays
        unreachable `KernelServerError` after `reconnect_attempts` tries."""
        for attempt in range(self.reconnect_attempts + 1):
            if self._closed or self._ws is not None:
                return
            await asyncio.sleep(self.reconnect_delay * attempt)
            try:
                if await self.client.get_kernel(self.kernel_id) is None:
                    raise KernelGone("The kernel is gone from its server.")
                await self.open()
                return
            except KernelGone:
                raise
            except KernelServerError:
                if attempt == self.reconnect_attempts:
                    raise
