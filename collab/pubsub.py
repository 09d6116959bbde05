"""The fan-out's transport with Redis: pub/sub, one PUBLISH per message.

A channel-layer group (channels-redis) costs a message's sender four commands and every member
worker three more, the sender's own included: with a lecture's watchers on four workers, Redis
was the workers' busiest socket. Here a message is one PUBLISH however many workers have the
room open, and each worker holds one subscribing connection for all its rooms.

`RedisPubSub` offers the part of the channel-layer interface `collab.fanout.Fanout` uses
(`new_channel`, `group_add`, `group_discard`, `group_send`, `receive`), with the same contract:
a call raises when Redis fails, and it fails loudly. redis-py would reconnect a subscription and
subscribe again by itself, hiding the messages lost meanwhile; here a subscription that failed
is dropped, so the failure reaches the fan-out, which subscribes every room again and has the
rooms catch up from the database. A subscription that hears nothing for `PING_AFTER` seconds
asks Redis (PING); no answer within `ANSWER_WITHIN` is a failure too (a silent network).
The subscription is read by its own task into `inbox`, so a subscription is confirmed whether
or not the caller is reading.
A `group_add` returns once Redis has confirmed the subscription, as a channel-layer group_add
returns once the membership is stored: what is published after it is heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import msgpack
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)

PING_AFTER = 5.0
ANSWER_WITHIN = 5.0
PUBLISH_CONNECTIONS = 16  # publishing waits for one of these beyond that (a hanging Redis)
INBOX_SIZE = 1000
CHANNEL_PREFIX = "collab.fanout."


class RedisPubSub:
    def __init__(self, url: str) -> None:
        # No retries: a failure is reported, never hidden by a reconnect (see above).
        options = {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 2}
        publishing = BlockingConnectionPool.from_url(
            url,
            max_connections=PUBLISH_CONNECTIONS,
            timeout=ANSWER_WITHIN,
            socket_timeout=ANSWER_WITHIN,
            **options,
        )
        self.publisher = Redis.from_pool(publishing)
        self.subscriber = Redis.from_pool(ConnectionPool.from_url(url, **options))
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task | None = None
        self._opening = asyncio.Lock()
        # What the reader heard, or the failure that ended it; the reader waits while it is full
        # (and Redis, past its output-buffer limit, disconnects it: a failure like any other).
        self.inbox: asyncio.Queue = asyncio.Queue(INBOX_SIZE)
        self._confirmations: dict[bytes, asyncio.Future] = {}

    async def new_channel(self, prefix: str = "") -> str:
        """A name for the caller's reader; pub/sub delivers by group, so it addresses nothing."""
        return f"{prefix}{uuid.uuid4().hex}"

    async def group_add(self, group: str, channel: str) -> None:
        name = (CHANNEL_PREFIX + group).encode()
        pubsub = await self._open()
        confirmed = self._confirmations.get(name)
        if confirmed is None:
            confirmed = self._confirmations[name] = asyncio.get_running_loop().create_future()
        try:
            await pubsub.subscribe(name)
        except BaseException as exc:  # cancelled too: the command may be half written
            self._lost(pubsub, exc)
            raise
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), ANSWER_WITHIN)
        except TimeoutError as exc:
            self._lost(pubsub, exc)
            raise ConnectionError(f"Redis did not confirm a subscription within {ANSWER_WITHIN:g} s") from exc

    async def group_discard(self, group: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # not subscribed to anything: the next subscription starts afresh
        try:
            await pubsub.unsubscribe(CHANNEL_PREFIX + group)
        except BaseException as exc:
            self._lost(pubsub, exc)
            raise

    async def group_send(self, group: str, message: dict) -> None:
        name, data = CHANNEL_PREFIX + group, msgpack.packb(message, use_bin_type=True)
        try:
            await self.publisher.publish(name, data)
        except RedisConnectionError as exc:
            if isinstance(exc.__cause__, TimeoutError):  # no connection free: Redis hangs
                raise
            # A connection the pool kept idle while Redis restarted is found closed only when
            # used: the message once more on a new connection (the others kept are as old). A
            # Redis that is away fails this one at once too.
            await self.publisher.connection_pool.disconnect(inuse_connections=False)
            await self.publisher.publish(name, data)

    async def receive(self, channel: str) -> dict:
        """The next message published to a subscribed group; raises once for a failed subscription."""
        item = await self.inbox.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        if self._pubsub is not None:
            self._lost(self._pubsub, ConnectionError("closed"))
        await asyncio.gather(*_closing, return_exceptions=True)
        await self.publisher.aclose()
        await self.subscriber.aclose()

    async def _open(self) -> PubSub:
        async with self._opening:
            if self._pubsub is None:
                pubsub = self.subscriber.pubsub()
                await pubsub.connect()
                self._pubsub = pubsub
                self._reader = asyncio.create_task(self._read(pubsub), name="collab-pubsub")
            return self._pubsub

    async def _read(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        pinged_at: float | None = None
        try:
            while True:
                message = await pubsub.get_message(timeout=PING_AFTER)
                if message is None:
                    if pinged_at is None:
                        pinged_at = loop.time()
                        await pubsub.ping()
                    elif loop.time() - pinged_at > ANSWER_WITHIN:
                        raise ConnectionError(f"Redis did not answer a PING within {ANSWER_WITHIN:g} s")
                    continue
                pinged_at = None  # whatever came, Redis is there
                kind = message["type"]
                if kind == "message":
                    try:
                        event = msgpack.unpackb(message["data"], raw=False)
                    except Exception:
                        log.warning("fan-out: a message on %r is not ours; ignored", message["channel"])
                        continue
                    await self.inbox.put(event)
                elif kind == "subscribe":
                    confirmed = self._confirmations.pop(message["channel"], None)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._lost(pubsub, exc)

    def _lost(self, pubsub: PubSub, exc: BaseException) -> None:
        """Drop a subscription whose connection failed (or whose state is unknown) and tell
        the receiver once; the next `group_add` opens a new one."""
        if self._pubsub is not pubsub:
            return
        self._pubsub = None
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._reader = None
        failure = ConnectionError(f"the fan-out's subscription failed: {exc!r}")
        for confirmed in self._confirmations.values():
            if not confirmed.done():
                confirmed.set_exception(failure)
                confirmed.exception()  # retrieved: only the waiting group_add reports it
        self._confirmations.clear()
        if self.inbox.full():  # every room catches up from the database after a failure anyway
            self.inbox.get_nowait()
        self.inbox.put_nowait(failure)
        task = asyncio.ensure_future(_close(pubsub))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task] = set()


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pubsub.aclose(), ANSWER_WITHIN)
