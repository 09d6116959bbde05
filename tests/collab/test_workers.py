"""Two real daphne workers sharing rooms through a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
import websockets

from tests.procs import Stack
from tests.yclient import YClient

pytestmark = pytest.mark.processes


class WsClient(YClient):
    def __init__(self, ws):
        self.ws = ws
        super().__init__(ws.send)
        self.received = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for frame in self.ws:
                self.received += 1
                await self.handle(frame)
        except websockets.ConnectionClosed:
            pass


async def open_client(port: int, notebook_id: str, cookie: str) -> WsClient:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/notebooks/{notebook_id}",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        max_size=None,
    )
    client = WsClient(ws)
    await client.start()
    await asyncio.wait_for(client.synced.wait(), 10)
    return client


async def settle(clients, timeout: float = 15) -> None:
    """Wait until every client holds the same document."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        sources = {c.source() for c in clients}
        if len(sources) == 1:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"clients did not converge: {[len(c.source()) for c in clients]}")


def stored_source(stack: Stack, notebook_id: str) -> str:
    return stack.django(
        "import json\nfrom notebooks.actions import current_notebook\n"
        f"print(json.dumps({{'source': current_notebook({notebook_id!r}).cells[0].source}}))"
    )["source"]


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=True)
    yield stack
    stack.close()


async def test_clients_on_two_workers_converge_under_a_burst(stack):
    alice = stack.user_with_notebook("burst@example.com")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    clients = [
        await open_client(port, alice["notebook_id"], alice["cookie"])
        for port in (a_port, b_port, a_port, b_port, a_port, b_port)
    ]
    rng = random.Random(7)

    async def typist(client: YClient, tag: str, n: int):
        for i in range(n):
            text = client.text()
            text.insert(len(text) if rng.random() < 0.5 else 0, f"{tag}{i % 10}")
            await client.flush()
            if i % 10 == 0:
                await asyncio.sleep(0.005)

    await asyncio.gather(*(typist(c, "abcdef"[k], 60) for k, c in enumerate(clients)))
    await settle(clients)
    text = clients[0].source()
    assert len(text) == 6 * 60 * 2
    for tag in "abcdef":
        assert text.count(tag) == 60
    assert stored_source(stack, alice["notebook_id"]) == text
    for c in clients:
        await c.ws.close()


async def test_a_killed_worker_loses_nothing_a_surviving_client_saw(stack):
    alice = stack.user_with_notebook("kill@example.com")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    writer = await open_client(a_port, alice["notebook_id"], alice["cookie"])
    observer = await open_client(b_port, alice["notebook_id"], alice["cookie"])

    async def type_forever():
        i = 0
        while True:
            writer.text().insert(len(writer.text()), f"<{i}>")
            await writer.flush()
            i += 1
            await asyncio.sleep(0.002)

    typing = asyncio.create_task(type_forever())
    await asyncio.sleep(1.0)
    stack.kill_worker(a_port)  # SIGKILL in the middle of the burst
    typing.cancel()
    await asyncio.sleep(1.5)  # let the observer's worker settle
    seen = observer.source()
    assert seen.count("<") > 20
    stored = stored_source(stack, alice["notebook_id"])
    assert stored.startswith(seen) or seen in stored or stored == seen
    # every update the observer received is in the database
    assert all(f"<{i}>" in stored for i in range(seen.count("<")))
    # and a client joining afterwards gets at least what the observer saw
    late = await open_client(b_port, alice["notebook_id"], alice["cookie"])
    assert seen in late.source() or late.source().startswith(seen)
    await observer.ws.close()
    await late.ws.close()


async def test_presence_crosses_workers_with_the_stamped_identity(stack):
    alice = stack.user_with_notebook("alice@example.com")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    a = await open_client(a_port, alice["notebook_id"], alice["cookie"])
    b = await open_client(b_port, alice["notebook_id"], alice["cookie"])
    await a.set_awareness({"user": {"name": "Mallory"}, "cell": "x"})
    for _ in range(50):
        if a.doc.client_id in b.awareness:
            break
        await asyncio.sleep(0.05)
    assert b.awareness[a.doc.client_id]["user"]["name"] == "Alice"
    await a.ws.close()
    for _ in range(50):
        if a.doc.client_id not in b.awareness:
            break
        await asyncio.sleep(0.05)
    assert a.doc.client_id not in b.awareness
    await b.ws.close()


async def test_a_large_change_goes_through_daphne_and_an_oversized_one_gets_4413(stack):
    alice = stack.user_with_notebook("large@example.com")
    port = stack.start_worker()
    client = await open_client(port, alice["notebook_id"], alice["cookie"])
    client.text().insert(0, "x" * 3_000_000)  # over daphne's stock 1 MiB limit
    await client.flush()
    other = await open_client(port, alice["notebook_id"], alice["cookie"])
    for _ in range(100):
        if len(other.source()) == 3_000_000:
            break
        await asyncio.sleep(0.05)
    assert len(other.source()) == 3_000_000
    client.text().insert(0, "y" * 17_000_000)  # over COLLAB MAX_MESSAGE_BYTES (16 MiB)
    await client.flush()
    await asyncio.wait_for(client.reader, 10)
    assert client.ws.close_code == 4413
    assert client.ws.close_reason == "That change is larger than the server accepts."
    await other.ws.close()


async def test_clients_of_a_killed_worker_reconnect_to_the_survivor_and_lose_nothing(stack):
    from tests.collab.test_faults_workers import all_saved, eventually, type_for
    from tests.faults import Typist

    alice = stack.user_with_notebook("kill-reconnect@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    a_port, b_port = stack.start_worker(), stack.start_worker()
    typists = [Typist([a_port, b_port], nid, cookie, f"a{k}") for k in range(2)]
    observer = Typist([b_port], nid, cookie, "b")
    for t in [*typists, observer]:
        await t.start()
    await type_for([*typists, observer], 1.0, every=0.01)
    stack.kill_worker(a_port)  # SIGKILL in the middle of the burst; the typists move to B
    await type_for([*typists, observer], 1.5, every=0.01)
    stored = await all_saved(stack, nid, [*typists, observer])
    await eventually(
        lambda: all(t.client.source() == stored for t in [*typists, observer]), 15, "clients to converge"
    )
    for t in [*typists, observer]:
        await t.stop()


async def test_edits_rarely_reach_an_observer_twice_with_writers_on_both_workers(stack):
    import collections
    import re

    from tests.faults import Typist

    alice = stack.user_with_notebook("once@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    # Without compaction: a snapshot that folds past a room's open gap is relayed as a diff of
    # the room's document, which may repeat updates it held pending behind the gap.
    no_compaction = {"COLLAB_COMPACT_AFTER_UPDATES": "100000"}
    a_port, b_port = stack.start_worker(**no_compaction), stack.start_worker(**no_compaction)
    ports = (a_port, b_port)
    typists = [Typist([port], nid, cookie, f"{who}{k}") for k, port in enumerate(ports) for who in "xy"]
    seen = [collections.Counter(), collections.Counter()]

    async def observe(port: int, counter: collections.Counter) -> None:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/notebooks/{nid}",
            additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
            max_size=None,
        ) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in ws:
                    counter.update(re.findall(rb"<[xy][01]\d+>", frame))

    observers = [asyncio.create_task(observe(p, c)) for p, c in zip((a_port, b_port), seen, strict=True)]
    for t in typists:
        await t.start()
    for _ in range(150):
        for t in typists:
            await t.type()
        await asyncio.sleep(0.01)
    wanted = sum(t.typed for t in typists)
    for _ in range(200):
        if all(len(c) == wanted for c in seen):
            break
        await asyncio.sleep(0.05)
    for t in typists:
        await t.stop()
    for task in observers:
        task.cancel()
    for counter in seen:
        assert len(counter) == wanted
        # Before gap repair relayed rows by number, 12-16% of deliveries were repeats on
        # PostgreSQL; about 1% remain (an open question, see docs/architecture.md).
        repeats = sum(n - 1 for n in counter.values())
        assert repeats <= 0.03 * wanted, repeats
