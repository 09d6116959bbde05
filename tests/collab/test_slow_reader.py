"""A client that stops reading is closed once too much waits for it, and the worker's memory
comes back; the others in the room carry on. A real daphne worker, since the buffer is Twisted's."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.support.processes import Stack, rss_mb
from tests.support.waiting import eventually_async
from tests.support.yclient import open_client

pytestmark = pytest.mark.processes


async def read_until_closed(ws) -> int:
    received = 0
    async with asyncio.timeout(10):
        try:
            while True:
                received += len(await ws.recv())
        except websockets.ConnectionClosed:
            return received


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=False, COLLAB_MAX_SEND_BUFFER=str(1024 * 1024), COLLAB_SLOW_CLOSE_GRACE="1")
    yield stack
    stack.close()


async def test_a_client_that_stops_reading_is_closed_and_its_memory_returns(stack):
    alice = stack.user_with_notebook("slow@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    port = stack.start_worker()
    pid = stack.workers[port].pid
    writer = await open_client(port, nid, cookie)
    observer = await open_client(port, nid, cookie)
    slow = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/notebooks/{nid}",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        max_size=None,
        max_queue=1,  # stops reading from the socket once one frame waits
    )
    baseline = rss_mb(pid)
    chunk = "x" * 200_000
    for i in range(1, 151):  # 30 MB of changes, far more than the kernel's socket buffers hold
        writer.text().insert(0, chunk)
        await writer.flush()
        observed = len(chunk) * i
        await eventually_async(  # the others keep up
            lambda n=observed: len(observer.source()) >= n, timeout=60, what="the observer", every=0.005
        )
    closed = "does not read"
    await eventually_async(lambda: closed in stack.log(port), timeout=30, what="the slow client's close")
    received = await read_until_closed(slow)
    assert received < 150 * len(chunk) // 2
    writer.text().insert(0, "after")  # the room lives on
    await writer.flush()
    await eventually_async(lambda: observer.source().startswith("after"), what="the room to live on")
    assert rss_mb(pid) < baseline + 80  # the 30 MB queued for the slow client are gone (the doc is 30 MB)
    await writer.ws.close()
    await observer.ws.close()
