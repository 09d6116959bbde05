"""The fan-out's Redis pub/sub transport against a real redis-server: every failure reaches the
caller (redis-py would reconnect and subscribe again by itself, hiding what was lost meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import tempfile

import pytest
import redis.asyncio

from collab import pubsub
from collab.pubsub import RedisPubSub
from tests.support.processes import free_port, wait_for_port

pytestmark = pytest.mark.processes


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pubsub-test-")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", self.dir]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def server():
    server = RedisServer()
    yield server
    with contextlib.suppress(ProcessLookupError):
        server.proc.send_signal(signal.SIGCONT)
    server.kill()


@pytest.fixture
async def transport(server):
    """Makes transports to `server`, closed after the test."""
    made = []

    def make() -> RedisPubSub:
        made.append(RedisPubSub(server.url))
        return made[-1]

    yield make
    for t in made:
        await t.aclose()


async def next_message(transport: RedisPubSub, timeout: float = 5) -> dict:
    return await asyncio.wait_for(transport.receive("reader"), timeout)


async def test_a_message_is_delivered_to_every_subscriber_and_bytes_stay_bytes(server, transport):
    a, b = transport(), transport()
    await a.group_add("nb.1", "reader")
    await b.group_add("nb.1", "reader")
    event = {"type": "updates", "updates": [b"\x00\x01", b""], "first_seq": 3}
    await a.group_send("nb.1", event)
    for transport in (a, b):  # the sender hears itself too (the fan-out skips its own by origin)
        assert await next_message(transport) == event


async def test_a_group_left_is_not_heard_and_another_group_still_is(server, transport):
    a = transport()
    await a.group_add("nb.1", "reader")
    await a.group_add("nb.2", "reader")
    await a.group_discard("nb.1", "reader")
    await a.group_send("nb.1", {"n": 1})
    await a.group_send("nb.2", {"n": 2})
    assert await next_message(a) == {"n": 2}


async def test_redis_restarting_fails_the_reader_and_nothing_resubscribes_behind_its_back(server, transport):
    a, sender = transport(), transport()
    await a.group_add("nb.1", "reader")
    reading = asyncio.ensure_future(next_message(a))
    server.kill()
    with pytest.raises(ConnectionError):
        await reading
    server.start()
    await sender.group_send("nb.1", {"n": 1})  # published while `a` holds no subscription
    with pytest.raises(TimeoutError):  # redis-py alone would have reconnected and heard it
        await next_message(a, timeout=0.5)
    await a.group_add("nb.1", "reader")  # what the fan-out's recovery does
    await sender.group_send("nb.1", {"n": 2})
    assert await next_message(a) == {"n": 2}


async def test_a_redis_that_stops_answering_fails_the_reader_after_a_ping(server, transport, monkeypatch):
    monkeypatch.setattr(pubsub, "PING_AFTER", 0.2)
    monkeypatch.setattr(pubsub, "ANSWER_WITHIN", 0.3)
    a = transport()
    await a.group_add("nb.1", "reader")
    server.proc.send_signal(signal.SIGSTOP)  # the connection stays open; nothing answers
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionError, match="did not answer a PING"):
        await next_message(a, timeout=5)
    assert loop.time() - started < 2


async def test_a_subscription_redis_does_not_confirm_fails_the_caller(server, transport, monkeypatch):
    monkeypatch.setattr(pubsub, "ANSWER_WITHIN", 0.3)
    a = transport()
    await a.group_add("nb.1", "reader")
    reading = asyncio.ensure_future(next_message(a))
    server.proc.send_signal(signal.SIGSTOP)
    with pytest.raises(ConnectionError, match="did not confirm"):
        await a.group_add("nb.2", "reader")
    with pytest.raises(ConnectionError):  # the reader learns of it too, and drops nothing silently
        await reading


async def test_after_a_failure_only_the_groups_joined_again_are_heard(server, transport):
    a, sender = transport(), transport()
    await a.group_add("nb.1", "reader")
    await a.group_add("nb.2", "reader")
    server.kill()
    with pytest.raises(ConnectionError):
        await next_message(a)
    await a.group_discard("nb.2", "reader")  # nothing to leave: returns at once
    server.start()
    await a.group_add("nb.1", "reader")
    await sender.group_send("nb.2", {"n": 2})
    await sender.group_send("nb.1", {"n": 1})
    assert await next_message(a) == {"n": 1}


async def test_a_message_that_is_not_the_fan_outs_is_skipped(server, transport, caplog):
    a = transport()
    await a.group_add("nb.1", "reader")
    other = redis.asyncio.Redis.from_url(server.url)
    await other.publish(pubsub.CHANNEL_PREFIX + "nb.1", b"\xc1 not msgpack")
    await a.group_send("nb.1", {"n": 1})
    with caplog.at_level(logging.WARNING, logger="collab.pubsub"):
        assert await next_message(a) == {"n": 1}
    assert "is not ours" in caplog.text
    await other.aclose()


async def test_the_first_publish_after_redis_restarted_while_idle_is_delivered(server, transport):
    """The publishing pool keeps its connections: one Redis closed while nothing was published
    is found dead only when used. Its PUBLISH failing made the worker report the fan-out down a
    second time, and the edit it carried reached idle rooms of the other workers only at their
    next periodic check (RESYNC_IDLE_INTERVAL, 30 s)."""
    a, sender = transport(), transport()
    await sender.group_send("nb.1", {"n": 0})  # the pool now holds an idle connection
    server.kill()
    server.start()
    await a.group_add("nb.1", "reader")
    await sender.group_send("nb.1", {"n": 1})
    assert await next_message(a) == {"n": 1}
