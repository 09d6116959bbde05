"""The kernel cluster's reader while the channel layer (Redis) is down: it logs one line when
receiving starts failing and one when the layer answers again, not a traceback per retry, and
goes on delivering what other workers send."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from kernels import cluster
from tests.support.waiting import eventually_async


class LayerThatGoesDown:
    """A channel layer whose every call fails while `down`, like channels-redis without Redis."""

    def __init__(self) -> None:
        self.down = False
        self.failed_calls = 0
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()

    def _check(self) -> None:
        if self.down:
            self.failed_calls += 1
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    async def receive(self, channel: str) -> dict:
        self._check()
        return await self.inbox.get()

    async def send(self, channel: str, message: dict) -> None:
        self._check()
        await self.inbox.put(message)


async def test_the_reader_logs_an_outage_once_and_its_end_once(monkeypatch, caplog):
    monkeypatch.setattr(cluster, "READ_RETRY_INTERVAL", 0.01, raising=False)
    layer = LayerThatGoesDown()
    node = cluster.Node()
    node.layer, node.channel = layer, "kernels.test"
    caplog.set_level(logging.WARNING, logger="kernels.cluster")
    layer.down = True
    reader = asyncio.create_task(node._read())
    try:
        await eventually_async(lambda: layer.failed_calls >= 10, what="the reader to retry 10 times")
        assert [r.getMessage() for r in caplog.records if "restored" in r.getMessage()] == []
        layer.down = False
        await eventually_async(
            lambda: any("restored" in r.getMessage() for r in caplog.records), what="the reader to recover"
        )
        # What another worker sends arrives again.
        waiting = node.loop.create_future()
        node._waiting["r1"] = waiting
        await layer.send(node.channel, {"type": "kernel.reply", "id": "r1", "reply": {"status": 200}})
        assert await asyncio.wait_for(waiting, 5) == {"status": 200}
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    lines = [r for r in caplog.records if r.name == "kernels.cluster"]
    assert [r.exc_info for r in lines] == [None, None], [r.getMessage() for r in lines]
    assert "receiving failed" in lines[0].getMessage()
    assert "Connection refused" in lines[0].getMessage()
    assert "restored" in lines[1].getMessage()


async def test_a_request_for_another_workers_kernel_while_the_layer_is_down_is_a_503(caplog):
    layer = LayerThatGoesDown()
    node = cluster.Node()
    node.layer, node.channel = layer, "kernels.test"
    layer.down = True
    who = {"user_id": 1, "key": "u:1", "meta": {}}
    reply = await node.forward("kernels.other", "nb-1", "status", {}, who)
    assert reply["status"] == 503
    assert "try again" in reply["body"]["error"]
    assert node._waiting == {}
    lines = [r for r in caplog.records if r.name == "kernels.cluster"]
    assert len(lines) == 1
    assert lines[0].exc_info is None


async def test_a_request_for_another_workers_kernel_while_redis_is_stopped_is_a_503_in_time(settings, caplog):
    """A stopped Redis neither answers nor refuses: handing the request to the layer waited for
    its socket timeout (30 s), not KERNEL_FORWARD_TIMEOUT."""
    settings.KERNEL_FORWARD_TIMEOUT = 0.2

    class StoppedLayer(LayerThatGoesDown):
        async def send(self, channel: str, message: dict) -> None:
            await asyncio.Event().wait()

    node = cluster.Node()
    node.layer, node.channel = StoppedLayer(), "kernels.test"
    who = {"user_id": 1, "key": "u:1", "meta": {}}
    reply = await asyncio.wait_for(node.forward("kernels.other", "nb-1", "status", {}, who), 2)
    assert reply["status"] == 503
    assert node._waiting == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "kernels.cluster"]
    assert len(lines) == 1, lines
    assert "did not take" in lines[0]


@pytest.mark.parametrize(("action", "loop"), [("sweep", "_sweep_forever"), ("renew_now", "_renew_forever")])
async def test_a_periodic_task_logs_a_database_outage_once_and_its_end_once(
    monkeypatch, settings, caplog, action, loop
):
    """The orphan sweep and the lease renewal, every KERNEL_LEASE_RENEW on every worker."""
    settings.KERNEL_LEASE_RENEW = 0.01
    node = cluster.Node()
    outage = {"down": True, "runs": 0}

    async def run():
        outage["runs"] += 1
        if outage["down"]:
            raise ConnectionError("could not connect to server: Connection refused")

    monkeypatch.setattr(node, action, run)
    caplog.set_level(logging.DEBUG, logger="kernels.cluster")
    task = asyncio.create_task(getattr(node, loop)())
    try:
        await eventually_async(lambda: outage["runs"] >= 10, what="10 failed runs")
        outage["down"] = False
        back = outage["runs"]
        await eventually_async(lambda: outage["runs"] >= back + 10, what="10 runs after the outage")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    lines = [r for r in caplog.records if r.name == "kernels.cluster"]
    said = [r.getMessage() for r in lines]
    assert [(r.levelname, r.exc_info) for r in lines] == [("WARNING", None)] * 2, said
    assert "failing" in lines[0].getMessage()
    assert "ConnectionError('could not connect to server: Connection refused')" in lines[0].getMessage()
    assert "works again" in lines[1].getMessage()
