"""Cross-worker fan-out: Redis pub/sub (`collab.pubsub`) with REDIS_URL, else the channel
layer (one process). Runs in the event loop; never blocks.

Each process has ONE reader; it joins the group `nb.<id>` of every notebook that has a room
here (with Redis: subscribes to its pub/sub channel) and hands incoming messages to the rooms.
A keystroke therefore costs one PUBLISH, not one message per worker or per socket. Delivery is
not guaranteed (a subscriber that falls behind Redis' output-buffer limit is disconnected, a
message published while a worker is not subscribed is gone); rooms detect gaps by sequence
number, and a failed subscription counts as the layer failing.

Redis may go away and come back empty: subscriptions live on a connection, so after any failure
a recovery task joins every room's group again as soon as Redis answers, and the rooms catch up
from the database. While it is down, publishing fails fast and quietly (rooms' periodic check
carries the edits); "fan-out down" and "fan-out restored" are logged once each.

No publish holds a request or a kernel on a Redis that neither answers nor refuses (a stopped
one holds a publish for its 5 s timeout): access changes, replacements and kernel states are
published with `publish_promptly`, which waits at most PUBLISH_FIRST_WAIT and then goes on
beside the caller; this worker's own room is told in-process first (`notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Literal, TypedDict

from channels.layers import get_channel_layer

from collab import metrics
from collab.conf import conf
from collab.pubsub import RedisPubSub
from collab.tasks import detach

log = logging.getLogger(__name__)

WORKER_ID = uuid.uuid4().hex


class UpdatesEvent(TypedDict):
    type: Literal["updates"]
    origin: str
    notebook: str
    first_seq: int
    updates: list[bytes]
    writer: int  # the client id the publishing room writes its own changes under


class AwarenessEvent(TypedDict, total=False):
    type: Literal["awareness"]
    origin: str
    notebook: str
    payload: bytes  # empty when it only carries `reserve`
    reserve: list  # [client id, person]: a released id its person's next socket may reclaim


class AccessEvent(TypedDict):
    """Grants, links or the notebook changed: re-check every socket's access."""

    type: Literal["access"]
    origin: str
    notebook: str


class ReplacedEvent(TypedDict):
    """The document was replaced (new epoch): close every socket with 4409."""

    type: Literal["replaced"]
    origin: str
    notebook: str


class KernelEvent(TypedDict):
    type: Literal["kernel"]
    origin: str
    notebook: str
    payload: dict[str, Any]


# Handled beside the reader: a replacement closes every socket of its room (an audit write and a
# presence message each), an access change re-checks every socket against the database.
SLOW_EVENTS = frozenset({"replaced", "access"})


def group_name(notebook_id: str) -> str:
    return f"nb.{notebook_id}"


class Fanout:
    def __init__(self) -> None:
        self.source = get_channel_layer()
        url = conf("FANOUT_REDIS_URL")
        self.layer = RedisPubSub(url) if url else self.source
        self.channel: str | None = None
        self.handlers: dict[str, Any] = {}  # notebook id -> room
        self._reader: asyncio.Task | None = None
        self._rejoiner: asyncio.Task | None = None
        self.down = False  # the channel layer failed and its groups are not known to be joined
        self._recovery: asyncio.Future | None = None
        self._dropped_again = False  # a failure was heard while `_recover` went over the rooms
        self._soon: set[asyncio.Task] = set()  # `publish_soon` messages not yet handed to the layer
        self._in_order: dict[str, asyncio.Task] = {}  # notebook id -> its newest `publish_in_order`
        self._in_order_waiting = 0

    async def _ensure_started(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel("collab.")
            self._reader = asyncio.create_task(self._read(), name="collab-fanout")
            if hasattr(self.layer, "group_expiry"):  # a channel layer forgets members; pub/sub does not
                self._rejoiner = asyncio.create_task(self._rejoin_periodically(), name="collab-fanout-rejoin")

    async def subscribe(self, notebook_id: str, room) -> None:
        """Never fails: with the layer down the room works alone and joins its group when
        the layer is back."""
        await self._ensure_started()
        self.handlers[notebook_id] = room
        if self.down:  # `_recover` subscribes it once Redis answers; a stopped Redis would hold the join
            return
        try:
            await self.layer.group_add(group_name(notebook_id), self.channel)
        except Exception as exc:
            self._went_down(exc)

    async def unsubscribe(self, notebook_id: str, room) -> None:
        if self.handlers.get(notebook_id) is not room:
            return  # a newer room of this notebook has taken over
        del self.handlers[notebook_id]
        if self.channel is not None and not self.down:
            try:
                await self.layer.group_discard(group_name(notebook_id), self.channel)
            except Exception as exc:
                self._went_down(exc)
                raise

    async def publish(self, event: dict) -> None:
        event["origin"] = WORKER_ID
        try:
            await self.layer.group_send(group_name(event["notebook"]), event)
        except Exception as exc:  # a lost message is repaired from the database
            self._went_down(exc)

    def publish_soon(self, event: dict) -> None:
        """Publish beside the caller, for messages a newer one replaces (presence): a layer
        that hangs holds none of the callers. With the layer down, or with
        AWARENESS_PUBLISH_BACKLOG of them still waiting, the message is dropped (counted)."""
        if self.down or len(self._soon) >= conf("AWARENESS_PUBLISH_BACKLOG"):
            metrics.inc("awareness_publish_dropped")
            return
        task = asyncio.ensure_future(self.publish(event))
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    async def publish_promptly(self, event: dict) -> None:
        """Publish, holding the caller (a request, a kernel's run loop) at most
        PUBLISH_FIRST_WAIT: a stopped Redis held a sharing change's request for the publish's
        5 s timeout. The message then goes on beside the caller (`publish_in_order`)."""
        publishing = self.publish_in_order(event)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(publishing), conf("PUBLISH_FIRST_WAIT"))

    def publish_in_order(self, event: dict) -> asyncio.Future:
        """Publish beside the caller, after the messages published this way for the same
        notebook before it (a kernel's states must arrive in the order they happened); the
        future is done once it is published or given up. With ORDERED_PUBLISH_BACKLOG of them
        waiting in this worker, the message is dropped (counted): the other workers' rooms
        re-check access periodically and catch up from the database."""
        if self._in_order_waiting >= conf("ORDERED_PUBLISH_BACKLOG"):
            metrics.inc("ordered_publish_dropped")
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        notebook_id = event["notebook"]
        previous = self._in_order.get(notebook_id)
        self._in_order_waiting += 1
        task = asyncio.ensure_future(self._publish_after(previous, event))
        self._in_order[notebook_id] = task
        task.add_done_callback(lambda t: self._published_in_order(notebook_id, t))
        return task

    async def _publish_after(self, previous: asyncio.Task | None, event: dict) -> None:
        # A task of an event loop that has ended (`async_to_sync` outside a server) is not waited for.
        if previous is not None and previous.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([previous])  # however it ended
        await self.publish(event)

    def _published_in_order(self, notebook_id: str, task: asyncio.Task) -> None:
        self._in_order_waiting -= 1
        if self._in_order.get(notebook_id) is task:
            del self._in_order[notebook_id]

    async def _rejoin_periodically(self) -> None:
        """The channel layer forgets a group's member `group_expiry` after it joined (a day
        with channels-redis): join every room's group again well before that, or a room open
        longer would hear the other workers only through its database checks."""
        while True:
            await asyncio.sleep(conf("FANOUT_REJOIN_INTERVAL"))
            if self.down:  # `_recover` joins them all when the layer is back
                continue
            try:
                for notebook_id in list(self.handlers):
                    await self.layer.group_add(group_name(notebook_id), self.channel)
            except Exception as exc:
                self._went_down(exc)

    def _went_down(self, exc: BaseException) -> None:
        if not self.down:
            log.warning("fan-out down (%r); rooms catch up from the database until it is back", exc)
            self._recovery = asyncio.ensure_future(self._recover())
        self._dropped_again = True  # a recovery going on starts over: what it joined may be lost
        self.down = True

    async def _recover(self) -> None:
        """Join every room's group again (Redis may have restarted empty), then let the rooms
        fetch what they missed meanwhile. A failure heard meanwhile (the reader's, a publish's)
        starts it over: the groups joined before it went with the connection, and the next
        join opened a new one (rooms joined before a drop stayed out of the fan-out though it
        said it was restored)."""
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            joined: set[str] = set()
            self._dropped_again = False
            try:
                # Until none is left: rooms that open meanwhile are registered, not subscribed.
                while pending := [n for n in self.handlers if n not in joined]:
                    for notebook_id in pending:
                        await self.layer.group_add(group_name(notebook_id), self.channel)
                        joined.add(notebook_id)
            except Exception:
                delay = min(delay * 2, 1.0)
                continue
            if self._dropped_again:
                delay = min(delay * 2, 1.0)
                continue
            break
        self.down = False
        log.warning("fan-out restored; %d rooms rejoined", len(self.handlers))
        for room in list(self.handlers.values()):
            detach(room._repair_or_leave_it())

    async def _read(self) -> None:
        delay = 0.1
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._went_down(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.1
            await self._deliver(event)
            del event  # a batch of updates (megabytes) is not held until the next message

    async def _deliver(self, event: dict) -> None:
        if event.get("origin") == WORKER_ID:
            return
        room = self.handlers.get(event.get("notebook"))
        if room is None:
            return
        if event.get("type") in SLOW_EVENTS:  # the other rooms' messages must not wait for it
            detach(_handle(room, event))
        else:
            await _handle(room, event)


async def _handle(room, event: dict) -> None:
    try:
        await room.on_fanout(event)
    except Exception:
        log.exception("room failed to handle %s", event.get("type"))


_fanout: Fanout | None = None


def fanout() -> Fanout:
    global _fanout
    if _fanout is None or _fanout.source is not get_channel_layer():
        _fanout = Fanout()
    return _fanout


async def notify(notebook_id, kind: Literal["access", "replaced"]) -> None:
    """Tell every worker's room for this notebook that something changed: ours in-process, at
    once; the others through the layer, without waiting on a layer that hangs. With the layer
    down, other workers' rooms still re-check every ACCESS_RECHECK_INTERVAL; the change itself
    is committed and must not fail for it."""
    room = fanout().handlers.get(str(notebook_id))
    if room is not None:
        await room.on_fanout({"type": kind, "notebook": str(notebook_id), "origin": "local"})
    await fanout().publish_promptly({"type": kind, "notebook": str(notebook_id)})
