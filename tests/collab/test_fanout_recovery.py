"""The fan-out's recovery after Redis was away: every room's group is joined again, also when
the subscribing connection drops again while the recovery is going over the rooms."""

from __future__ import annotations

import asyncio
import contextlib

from collab.fanout import Fanout, group_name
from tests.support.waiting import eventually_async


class Room:
    async def _repair_or_leave_it(self) -> None:
        pass


class DroppingLayer:
    """A pub/sub layer whose subscribing connection drops once, just before `drop_at` is
    joined: the groups joined before it are lost with the connection, as Redis's are."""

    def __init__(self, drop_at: str) -> None:
        self.subscribed: set[str] = set()
        self.drop_at = drop_at
        self.on_drop = None

    async def group_add(self, group: str, channel: str) -> None:
        if group == self.drop_at and self.on_drop is not None:
            on_drop, self.on_drop = self.on_drop, None
            self.subscribed.clear()
            on_drop()  # what the reader does when it hears of the drop
        await asyncio.sleep(0)
        self.subscribed.add(group)


async def test_a_drop_while_the_rooms_are_joined_again_is_joined_again_too():
    """Rooms joined before the drop stayed out of the fan-out though "fan-out restored" was
    logged: they heard the other workers only through their database checks."""
    fanout = Fanout()
    layer = DroppingLayer(drop_at=group_name("b"))
    fanout.layer, fanout.channel = layer, "collab.test"
    fanout.handlers = {"a": Room(), "b": Room(), "c": Room()}
    layer.on_drop = lambda: fanout._went_down(ConnectionError("Connection closed by server."))
    fanout._went_down(ConnectionError("Connection refused."))
    try:
        await eventually_async(lambda: not fanout.down, what="the fan-out to recover")
        assert layer.subscribed == {group_name(n) for n in "abc"}
    finally:
        if fanout._recovery is not None:
            fanout._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fanout._recovery
