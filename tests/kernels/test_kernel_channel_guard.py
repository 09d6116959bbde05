"""`kernels.channelguard` against what a notebook's code can make its kernel send (real Jupyter
Server + sandboxed ipykernel, a kernel websocket as the bridge opens it): the server that runs
every notebook's kernel does not abort and keeps no more of it than a few requests' headers, a
restart forgets what the old kernel owed, and what the guard tells goes to the cell that caused it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kernels.jupyter import JupyterClient
from kernels.kernelws import KernelChannels
from kernels.local_server import LocalJupyterServer
from tests.support.processes import rss_mb
from tests.support.waiting import eventually_async

BIG = "'x' * (40 << 20)"  # over the server's 32 MB message limit


class Channels:
    """A kernel websocket whose incoming messages are all kept in `messages`."""

    def __init__(self, channels: KernelChannels) -> None:
        self.channels = channels
        self.messages: list[dict[str, Any]] = []
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.channels.messages():
            self.messages.append(msg)

    def of(self, msg_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if (m.get("parent_header") or {}).get("msg_id") == msg_id]

    def errors(self, msg_id: str) -> list[str]:
        return [m["content"]["ename"] for m in self.of(msg_id) if m["msg_type"] == "error"]

    def finished(self, msg_id: str) -> bool:
        mine = self.of(msg_id)
        idle = any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in mine)
        return idle and any(m["channel"] == "shell" for m in mine)

    async def run(self, code: str, *, what: str, timeout: float = 15, allow_stdin: bool = False) -> str:
        msg_id = await self.channels.execute(code, allow_stdin=allow_stdin)
        await eventually_async(lambda: self.finished(msg_id), what=what, timeout=timeout)
        return msg_id

    async def close(self) -> None:
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        await self.channels.close()


@pytest.fixture(scope="module")
def server() -> Iterator[LocalJupyterServer]:
    """A server of this module's own: its memory is measured, and a guard that fails may abort it."""
    with LocalJupyterServer() as started:
        yield started


@pytest.fixture
async def kernel(server: LocalJupyterServer) -> AsyncIterator[tuple[JupyterClient, str]]:
    async with JupyterClient(server.url, server.token) as client:
        kernel_id = (await client.start_kernel())["id"]
        yield client, kernel_id
        await client.shutdown_kernel(kernel_id)


@pytest.fixture
async def ws(kernel) -> AsyncIterator[Channels]:
    client, kernel_id = kernel
    channels = client.channels(kernel_id)
    await channels.open()
    watched = Channels(channels)
    await eventually_async(lambda: channels.iopub_answered.is_set(), what="iopub to answer", timeout=30)
    yield watched
    await watched.close()


def made_up_busy(count: int, pad_bytes: int) -> str:
    """Kernel code publishing `count` busy statuses for requests nobody sent, each header padded
    with `pad_bytes`."""
    return (
        "import uuid\n"
        "k = get_ipython().kernel\n"
        f"for _ in range({count}):\n"
        f"    pad = 'p' * {pad_bytes}\n"
        "    parent = {'msg_id': uuid.uuid4().hex, 'msg_type': 'execute_request', 'pad': pad}\n"
        "    k.session.send(k.iopub_socket, 'status', {'execution_state': 'busy'}, parent=parent)\n"
    )


async def test_made_up_request_headers_on_iopub_are_not_kept_by_the_server(ws, server):
    """The guard remembers the requests busy now; their headers come from the kernel, whose code
    can make them any size under the limit: 40 of 2 MB kept 80 MB per iopub stream (two per
    kernel with one websocket), and 100 of 31 MB would keep 6 GB of the server all kernels share.
    The first batch warms the server up (what passing them on costs it, it keeps for later)."""
    spoof = made_up_busy(40, 2 << 20) + "print('sent')"
    await ws.run(spoof, what="the first made-up statuses", timeout=60)
    before = rss_mb(server.pid)
    await ws.run(spoof, what="the second made-up statuses", timeout=60)
    grown = rss_mb(server.pid) - before
    assert grown < 40, f"the server grew by {grown:.0f} MB and kept it"
    await ws.run("print('next')", what="the next run")


async def test_what_is_owed_stays_bounded_while_drops_repeat_during_one_run(ws, kernel):
    """While a run goes on, the probe sent at its first drop waits, and each drop added the
    requests busy then to those owed an `idle`: a kernel that made up 100 busy requests before
    each of 20 drops had 2,000 owed per stream (without bound), all told once the run ended."""
    client, kernel_id = kernel
    code = (
        "import time\n"
        "k = get_ipython().kernel\n"
        "big = memoryview(b'x' * (33 << 20))\n"
        "for drop in range(20):\n"
        "    time.sleep(1 if drop == 19 else 0)  # the last ones all arrive (see below)\n"
        "    for i in range(100):\n"
        "        parent = {'msg_id': f'made-up-{drop}-{i}', 'msg_type': 'execute_request'}\n"
        "        k.session.send(k.iopub_socket, 'status', {'execution_state': 'busy'}, parent=parent)\n"
        "    k.session.send(k.iopub_socket, 'display_data', {'data': {}, 'metadata': {}},"
        " parent=k.get_parent('shell'), buffers=[big])\n"
        "    time.sleep(0.15)\n"
        "print('dropped', flush=True)\n"
        "time.sleep(600)\n"
    )
    run = await ws.channels.execute(code)
    await eventually_async(
        lambda: any(m["msg_type"] == "stream" for m in ws.of(run)), what="the drops", timeout=60
    )
    await client.interrupt_kernel(kernel_id)

    def made_up_idles() -> list[str]:
        return [
            m["parent_header"]["msg_id"]
            for m in ws.messages
            if m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle"
            and str((m.get("parent_header") or {}).get("msg_id", "")).startswith("made-up-")
        ]

    # The last drop's are owed either way, and told together with the others owed then (some
    # sent while the guard reconnected after the drop before may be lost: not those, sent later).
    await eventually_async(
        lambda: sum(i.startswith("made-up-19-") for i in made_up_idles()) == 100,
        what="the idles owed for the last drop",
        timeout=30,
    )
    told = len(made_up_idles())
    assert told <= 100, f"{told} idles told for made-up requests"
    await ws.run("print('next')", what="the next run")


async def test_a_drop_after_a_restart_is_made_up_for_though_the_old_kernel_never_answered(ws):
    """A drop during a long run sends a probe that the kernel answers after the run. A restart
    then lost the probe, and the guard, still waiting for it, sent none for later drops: the
    next run whose output went over the limit never ended."""
    long_run = await ws.channels.execute(f"print({BIG})\nimport time\ntime.sleep(600)")
    await eventually_async(lambda: ws.errors(long_run), what="the long run's error", timeout=30)
    await ws.channels.restart()
    await eventually_async(lambda: ws.channels.iopub_answered.is_set(), what="the new kernel", timeout=30)
    big = await ws.run(f"print({BIG})", what="the run over the limit after the restart")
    assert ws.errors(big) == ["OutputTooLarge"]
    after = await ws.run("print('next')", what="the next run")
    assert [m["content"]["text"] for m in ws.of(after) if m["msg_type"] == "stream"] == ["next\n"]


async def test_the_prompt_error_goes_to_the_cell_though_a_message_without_parent_came_between(ws):
    """ipykernel answers a new iopub subscription (as after a drop) with `iopub_welcome`, which
    has no parent: the guard took that as the running request, and the PromptTooLarge error
    went to no cell."""
    code = (
        "import time\n"
        f"print({BIG})\n"
        "time.sleep(1)  # the reconnection is done: what follows arrives\n"
        "k = get_ipython().kernel\n"
        "k.session.send(k.iopub_socket, 'iopub_welcome', {'subscription': ''})\n"
        f"answer = input({BIG})\n"
        "print(repr(answer))\n"
    )
    run = await ws.run(code, what="the run with a prompt over the limit", timeout=30, allow_stdin=True)
    assert ws.errors(run) == ["OutputTooLarge", "PromptTooLarge"]


async def test_a_reply_with_a_malformed_parent_header_does_not_hold_up_the_next_reply(ws):
    """The guard reads each reply's parent header: one that is not a JSON object raised in the
    stream's callback, and the run's own reply, queued behind it, never came."""
    code = (
        "k = get_ipython().kernel\n"
        "s = k.session\n"
        "parts = [s.pack(s.msg_header('comm_msg')), b'[]', b'{}', b'{}']\n"
        "frames = [*k._parent_ident['shell'], b'<IDS|MSG>', s.sign(parts), *parts]\n"
        "k.shell_stream.socket.send_multipart(frames)\n"
        "print('sent')\n"
    )
    await ws.run(code, what="the run after a reply with a malformed parent")
    await ws.run("print('next')", what="the next run")


async def test_outputs_just_before_one_over_the_limit_reach_the_cell_and_the_server_lives_on(ws, server):
    """The outputs the kernel sent just before one over the limit (one sent at once: a binary
    buffer, as a widget's) were still queued in the server when the guard reconnected: they could
    be lost, and the server itself abort (libzmq's `Assertion failed: !_more (src/fq.cpp:80)`:
    SIGABRT, every notebook's kernel gone), in one such drop out of two or three."""
    code = (
        "import time\n"
        "k = get_ipython().kernel\n"
        "big = memoryview(b'x' * (33 << 20))\n"
        "for _ in range(5):\n"
        "    for i in range(100):\n"
        "        print(i, flush=True)\n"
        "    content = {'data': {}, 'metadata': {}}\n"
        "    k.session.send(k.iopub_socket, 'display_data', content, k.get_parent(), buffers=[big])\n"
        "    time.sleep(0.5)\n"
    )
    run = await ws.channels.execute(code)
    await eventually_async(lambda: ws.finished(run) or not server.running, what="the run to end", timeout=60)
    assert server.running, "the server aborted"
    assert ws.errors(run) == ["OutputTooLarge"] * 5
    # Before the first one over the limit: every line (later ones may go with a reconnection).
    mine = ws.of(run)
    first_error = next(n for n, m in enumerate(mine) if m["msg_type"] == "error")
    text = "".join(m["content"]["text"] for m in mine[:first_error] if m["msg_type"] == "stream")
    assert text == "".join(f"{i}\n" for i in range(100))
    await ws.run("print('next')", what="the next run")
