"""A room's frame is encoded once and written straight to every socket's connection
(collab.daphne_patches.write_frame): every socket gets every update, in order; a socket that
went away mid-fan-out does not stop the others; the slow-reader limit still closes with 4429.
The last ones need a real daphne worker, since the connections are Twisted's."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections import deque

import pytest
import websockets
from pycrdt import Array
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from collab import daphne_patches, protocol
from collab.broadcast import fan_out
from collab.fanout import fanout
from collab.rooms import get_room
from collab.socket import Outgoing
from notebooks import ydoc
from tests.support import yclient
from tests.support.processes import Stack
from tests.support.waiting import eventually_async
from tests.support.yclient import open_client

# encoding and the guards, without a server


def parsed(wire: bytes) -> Frame:
    """The frame as a client (websockets) reads it."""
    reader = StreamReader()
    reader.feed_data(wire)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
        while True:
            parser.send(None)
    except StopIteration as done:
        return done.value


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_a_frame_is_one_unmasked_binary_websocket_frame(size):
    payload = bytes(i % 251 for i in range(size))
    frame = parsed(daphne_patches.encode_binary(payload))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)


class FakeTransport:
    connected = True
    disconnecting = False

    def __init__(self, waiting: int = 0):
        self.dataBuffer = b"x" * waiting
        self._tempDataLen = 0
        self.written: list[bytes] = []

    def write(self, data):
        self.written.append(bytes(data))


class FakeProtocol:
    STATE_OPEN = daphne_patches.WebSocketProtocol.STATE_OPEN

    def __init__(self, transport, state=None):
        self.transport = transport
        self.state = self.STATE_OPEN if state is None else state
        self._perMessageCompress = None
        self.send_queue = deque()
        self.autoFragmentSize = 0
        self.maxMessagePayloadSize = 0
        self.closes: list[tuple[int, str]] = []

    def sendClose(self, code=None, reason=None):
        self.closes.append((code, reason))


def test_one_encoding_is_written_to_every_socket(settings):
    protocols = [FakeProtocol(FakeTransport()) for _ in range(3)]
    frame = Outgoing(protocol.sync_update(b"\x01\x02"))
    assert all(daphne_patches.write_frame(p, frame) for p in protocols)
    assert frame.encoded == daphne_patches.encode_binary(frame.data)
    assert [p.transport.written for p in protocols] == [[frame.encoded]] * 3


def test_a_socket_daphne_must_serve_itself_is_left_to_daphne():
    frame = Outgoing(b"\x00\x02\x00")
    opening = FakeProtocol(FakeTransport(), state=daphne_patches.WebSocketProtocol.STATE_CONNECTING)
    compressed = FakeProtocol(FakeTransport())
    compressed._perMessageCompress = object()
    queued = FakeProtocol(FakeTransport())
    queued.send_queue.append((b"x", True))
    for proto in (opening, compressed, queued):
        assert not daphne_patches.write_frame(proto, frame)
        assert proto.transport.written == []


def test_a_closing_or_closed_socket_takes_nothing_as_with_daphne():
    frame = Outgoing(b"\x00\x02\x00")
    ws = daphne_patches.WebSocketProtocol
    for state in (ws.STATE_CLOSING, ws.STATE_CLOSED):
        gone = FakeProtocol(FakeTransport(), state=state)
        assert daphne_patches.write_frame(gone, frame)  # handled: dropped
        assert gone.transport.written == []


def test_a_socket_with_too_much_waiting_is_closed_with_4429_and_gets_nothing_more(settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_SEND_BUFFER": 1000, "SLOW_CLOSE_GRACE": 3600}
    slow = FakeProtocol(FakeTransport(waiting=5000))
    frame = Outgoing(b"\x00\x02\x00")
    assert daphne_patches.write_frame(slow, frame)  # dropped, not left to daphne
    assert daphne_patches.write_frame(slow, frame)
    assert slow.closes == [(daphne_patches.TOO_SLOW, daphne_patches.TOO_SLOW_REASON)]
    assert slow.transport.written == []
    from twisted.internet import reactor

    for call in reactor.getDelayedCalls():  # the cut after the grace period; never run here
        call.cancel()


def test_a_frame_larger_than_the_limit_may_wait_in_full_before_the_socket_counts_as_slow(settings):
    # A notebook larger than the send limit reaches a joiner as one frame: while that frame is
    # on its way the socket is not slow, or a joiner of a big notebook would loop on 4429.
    settings.COLLAB = {**settings.COLLAB, "MAX_SEND_BUFFER": 1000, "SLOW_CLOSE_GRACE": 3600}
    joiner = FakeProtocol(FakeTransport())
    assert daphne_patches.write_frame(joiner, Outgoing(b"d" * 5000))
    joiner.transport.dataBuffer = b"d" * 5000  # none of it read yet
    assert daphne_patches.write_frame(joiner, Outgoing(b"\x00\x02\x00"))
    assert joiner.closes == []
    assert len(joiner.transport.written) == 2
    joiner.transport.dataBuffer = b"d" * 6001  # more than the limit beyond that frame
    assert daphne_patches.write_frame(joiner, Outgoing(b"\x00\x02\x00"))
    assert joiner.closes == [(daphne_patches.TOO_SLOW, daphne_patches.TOO_SLOW_REASON)]
    from twisted.internet import reactor

    for call in reactor.getDelayedCalls():
        call.cancel()


class PartlyWritten:
    """Twisted's own write buffer (FileDescriptor), whose socket takes `accepts` bytes a go."""

    def __new__(cls, accepts: int):
        from twisted.internet.abstract import FileDescriptor

        class Descriptor(FileDescriptor):
            def startWriting(self):
                pass

            def stopWriting(self):
                pass

            def writeSomeData(self, data):
                return min(accepts, len(data))

        descriptor = Descriptor(reactor=object())
        descriptor.connected = True
        return descriptor


def test_what_waits_is_what_twisted_has_not_written_yet():
    transport = PartlyWritten(accepts=60_000)
    transport.write(b"x" * 100_000)
    assert daphne_patches.buffered_bytes(transport) == 100_000
    transport.doWrite()  # 60,000 bytes reach the kernel; Twisted keeps its buffer, moves an offset
    transport.write(b"y" * 5_000)
    assert daphne_patches.buffered_bytes(transport) == 45_000
    transport.doWrite()
    transport.doWrite()
    assert daphne_patches.buffered_bytes(transport) == 0


async def test_a_socket_that_fails_does_not_stop_the_others():
    got: dict[str, list[bytes]] = {"direct": [], "awaited": []}

    class Direct:
        def send_now(self, frame):
            got["direct"].append(frame.data)
            return True

    class Gone:
        def send_now(self, frame):
            return False

        async def send_frame(self, frame):
            raise ConnectionError("gone")

    class Awaited:
        def send_now(self, frame):
            return False

        async def send_frame(self, frame):
            got["awaited"].append(frame)

    await fan_out([Gone(), Direct(), Gone(), Awaited()], b"frame")
    assert got == {"direct": [b"frame"], "awaited": [b"frame"]}


# a real worker

MARK = re.compile(rb"<(\d+)>")


class RawObserver:
    """A y-websocket client without a Doc: notes the markers of every sync frame, in order."""

    def __init__(self, ws):
        self.ws = ws
        self.marks: list[int] = []
        self.joined = False  # the server's step 1 came: this socket is in the room
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if frame[:2] == b"\x00\x00":  # the server's step 1: answer as an empty client
                    self.joined = True
                    await self.ws.send(protocol.sync_step2(protocol.EMPTY_UPDATE))
                elif frame[:1] == b"\x00":  # step 2 or an update
                    self.marks += [int(m) for m in MARK.findall(frame)]
        except websockets.ConnectionClosed:
            pass


async def observe(port: int, nid: str, cookie: str) -> RawObserver:
    ws = await yclient.connect(port, nid, cookie)
    await ws.send(protocol.sync_step1(b"\x00"))
    return RawObserver(ws)


def metrics(port: int) -> dict[str, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer fanout-test"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {k: float(v) for k, v in (line.split() for line in lines if line and not line.startswith("#"))}


@pytest.fixture(scope="module")
def stack():
    stack = Stack(
        redis=False,
        COLLAB_MAX_SOCKETS_PER_PERSON="200",
        COLLAB_MAX_SOCKETS_PER_ROOM="200",
        METRICS_TOKEN="fanout-test",
    )
    yield stack
    stack.close()


@pytest.mark.processes
async def test_every_socket_gets_every_update_in_order_and_one_that_left_stops_nobody(stack):
    owner = stack.user_with_notebook("fanout@example.com")
    nid, cookie = owner["notebook_id"], owner["cookie"]
    port = stack.start_worker()
    writer = await open_client(port, nid, cookie)
    observers = [await observe(port, nid, cookie) for _ in range(30)]
    await eventually_async(lambda: all(o.joined for o in observers), what="the observers to join")
    count = 120
    for i in range(count):
        writer.text().insert(len(writer.text()), f"<{i}>")
        await writer.flush()
        if i == count // 3:  # a third of the observers go away mid-stream, without a close frame
            for gone in observers[::3]:
                gone.ws.transport.abort()
    staying = [o for k, o in enumerate(observers) if k % 3]
    await eventually_async(
        lambda: all(len(o.marks) >= count for o in staying), timeout=30, what="every update at every observer"
    )
    for o in staying:
        assert o.marks == list(range(count))  # each once, in order
    late = await open_client(port, nid, cookie)  # the room lives on and is whole
    assert late.source() == "".join(f"<{i}>" for i in range(count))
    assert "Traceback" not in stack.log(port)
    counters = metrics(port)
    direct = counters["collab_frames_written_direct_total"]
    awaited = counters["collab_frames_sent_awaited_total"]
    assert direct >= len(staying), (direct, awaited)  # daphne's own send path was not what served them
    assert awaited == 0, (direct, awaited)  # not even to the sockets that went away
    for o in staying:
        await o.ws.close()
    await writer.ws.close()
    await late.ws.close()


# a room's relay, in one process


def typing(room, text: str) -> bytes:
    """An update typing `text` at the start of the first cell, made against the room's Doc."""
    doc = ydoc.doc_from_updates(room.doc.get_update())
    before = doc.get_state()
    doc.get("cells", type=Array)[0]["source"].insert(0, text)
    return doc.get_update(before)


@pytest.mark.django_db(transaction=True)
async def test_batches_committed_during_a_relay_reach_sockets_as_one_frame_and_other_workers_one_by_one(
    notebook, monkeypatch
):
    room = await get_room(str(notebook.pk))
    start = room.doc.get_update()
    frames: list[bytes] = []
    release = asyncio.Event()

    class Held:  # the first frame waits until released: the relay is "going on"
        client_id = None
        ext = False
        access_ends_at = None
        may_run = False

        def send_now(self, frame):
            return False

        async def send_frame(self, frame):
            frames.append(frame)
            if len(frames) == 1:
                await release.wait()

        async def close_with(self, code, reason):
            pass

        async def recheck_access(self):
            pass

    room.add(Held())
    published: list[dict] = []

    async def publish(event):
        published.append(event)

    monkeypatch.setattr(fanout(), "publish", publish)
    for text in ("a", "b", "c"):  # three batches, each committed before the next is typed
        room.receive_update(typing(room, text), None)
        await asyncio.wait_for(room.flushed(), 5)
        await eventually_async(lambda: frames, what="the first relay to start")
    release.set()
    await asyncio.wait_for(room._committed.join(), 5)
    # the relayer has queued them all; the room's sender sends what queued as one frame
    await eventually_async(lambda: len(frames) >= 2 and not room._outbox, what="the queued frame sent")
    assert len(frames) == 2  # "a", then "b" and "c" together
    seen = ydoc.doc_from_updates(start)  # a client that had the room's start gets everything
    for frame in frames:
        seen.apply_update(protocol.parse(frame).payload)
    assert str(seen.get("cells", type=Array)[0]["source"]) == "cba"
    updates = [e for e in published if e["type"] == "updates"]
    assert [len(e["updates"]) for e in updates] == [1, 1, 1]  # one message per batch
    assert [e["first_seq"] for e in updates] == [updates[0]["first_seq"] + i for i in range(3)]
    await room.close()
