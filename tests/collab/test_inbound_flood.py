"""A client that sends faster than the worker handles its messages must not grow the worker
without bound: daphne queues every received frame for the consumer, so what the worker holds
for one socket has to be bounded by reading no faster than the room handles it (or by closing
the socket). A real daphne worker, since the queue is daphne's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import websockets

from collab import protocol
from tests.support.processes import Stack, rss_mb
from tests.support.waiting import eventually_async
from tests.support.yclient import connect, open_client

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=False)
    yield stack
    stack.close()


async def test_a_viewer_flooding_presence_does_not_grow_the_worker_without_bound(stack):
    alice = stack.user_with_notebook("flood-owner@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    viewer = stack.user_with_notebook("flood-viewer@example.com")
    stack.call("share_with", nid, "flood-viewer@example.com", "viewer")
    port = stack.start_worker()
    pid = stack.workers[port].pid
    writer = await open_client(port, nid, cookie)
    flooder = await connect(port, nid, viewer["cookie"])
    await flooder.send(protocol.sync_step1(b"\0"))
    baseline = rss_mb(pid)
    state = json.dumps({"pad": "y" * (15 << 10)})  # under COLLAB_MAX_AWARENESS_BYTES (16 KiB)
    # 6,000 messages (88 MiB): a worker that queued them all grew 80-90 MB in 2-5 s here (with
    # the queue unbounded), one that stops reading grows under 1 MB; the time is only a backstop.
    peak, sent, end = baseline, 0, time.monotonic() + 10
    try:
        while sent < 6000 and time.monotonic() < end and peak < baseline + 400:
            await flooder.send(protocol.awareness(protocol.encode_awareness([(4242, sent + 1, state)])))
            sent += 1
            if sent % 200 == 0:
                peak = max(peak, rss_mb(pid))
    except websockets.ConnectionClosed:
        pass  # closing the flooder is an acceptable answer too
    peak = max(peak, rss_mb(pid))
    await close_unread(flooder)
    grown = peak - baseline
    assert grown < 50, f"{sent} presence messages ({sent * 15 // 1024} MiB) grew it by {grown:.0f} MB"
    writer.text().insert(0, "after")  # the room lives on
    await writer.flush()
    observer = await open_client(port, nid, cookie)
    await eventually_async(lambda: observer.source().startswith("after"), what="the room to live on")
    await writer.ws.close()
    await observer.ws.close()


async def close_unread(ws) -> None:
    """Close a socket whose messages nobody read: websockets stops reading once 16 wait, so the
    server's closing frame would go unseen and close() wait out its 10 s close_timeout."""

    async def read_all() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass

    reader = asyncio.create_task(read_all())
    await ws.close()
    await reader


def test_the_receive_queue_is_bounded_in_bytes_too():
    """A few large messages fill a worker as fast as many small ones: a socket stops being read
    once its waiting messages reach RECEIVE_QUEUE_MAX_BYTES, and is read again when the room has
    taken them."""
    from daphne.ws_protocol import WebSocketProtocol

    from collab import daphne_patches

    class Transport:
        paused = False

        def pauseProducing(self):
            self.paused = True

        def resumeProducing(self):
            self.paused = False

    class Connection:
        muted = False
        client_addr = ("127.0.0.1", 1)
        state = WebSocketProtocol.STATE_OPEN
        last_ping = 0.0

        def __init__(self):
            self.application_queue = asyncio.Queue()
            self.transport = Transport()

    conn = Connection()
    big = b"x" * daphne_patches.RECEIVE_QUEUE_MAX_BYTES
    daphne_patches._on_message(conn, big, True)
    assert conn.transport.paused
    conn.application_queue.get_nowait()  # the room took it
    daphne_patches._resume_when_drained(conn)
    assert not conn.transport.paused
