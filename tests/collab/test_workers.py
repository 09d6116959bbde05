"""Two real daphne workers sharing rooms through a real redis-server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import re
import time

import pytest
import websockets
from pycrdt import Array, Doc

from collab import protocol
from tests.support.faults import Typist, all_saved, type_for
from tests.support.processes import Stack
from tests.support.waiting import eventually_async
from tests.support.yclient import YClient, connect, open_client, settle

pytestmark = pytest.mark.processes


def quiet(client):
    """A predicate that holds once `client` received nothing since it was last asked."""
    last = -1

    def nothing_new() -> bool:
        nonlocal last
        received, last = last, client.received
        return received == client.received

    return nothing_new


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
    assert stack.stored_source(alice["notebook_id"]) == text
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
    await asyncio.sleep(1.0)  # a second of typing, then the kill lands in the middle of the burst
    stack.kill_worker(a_port)  # SIGKILL
    typing.cancel()
    await eventually_async(
        quiet(observer), timeout=15, what="the observer to receive nothing new for 0.5 s", every=0.5
    )
    seen = observer.source()
    assert seen.count("<") > 20
    stored = stack.stored_source(alice["notebook_id"])
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
    await eventually_async(lambda: a.doc.client_id in b.awareness, what="A's presence at B")
    assert b.awareness[a.doc.client_id]["user"]["name"] == "Alice"
    await a.ws.close()
    await eventually_async(lambda: a.doc.client_id not in b.awareness, what="A's presence to leave B")
    await b.ws.close()


async def test_a_reconnecting_clients_presence_cannot_be_taken_on_another_worker(stack):
    """A browser keeps its client id when its socket reconnects, and nginx may send the new
    socket to another worker: in the moment between, another person's socket on that worker
    must not claim the id (it would show as that person, and the owner's return be ignored)."""
    alice = stack.user_with_notebook("away@example.com")
    bob = stack.user_with_notebook("taker@example.com", notebook=None)
    stack.call("share_with", alice["notebook_id"], "taker@example.com", "viewer")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    observer = await open_client(b_port, alice["notebook_id"], alice["cookie"])
    a = await open_client(a_port, alice["notebook_id"], alice["cookie"])
    mine = a.doc.client_id
    await a.set_awareness({"cell": "mine"}, clock=1)
    await eventually_async(lambda: mine in observer.awareness, what="Alice's presence at B")
    await a.ws.close()  # a network blip; the browser comes back through the other worker
    await eventually_async(lambda: mine not in observer.awareness, what="Alice's presence to leave B")
    taker = await open_client(b_port, alice["notebook_id"], bob["cookie"])
    await taker.set_awareness({"cell": "taken"}, client_id=mine, clock=50)
    back = await open_client(b_port, alice["notebook_id"], alice["cookie"])
    await back.set_awareness({"cell": "back"}, client_id=mine, clock=2)
    await eventually_async(
        lambda: (observer.awareness.get(mine) or {}).get("cell") == "back", what="Alice's return"
    )
    assert observer.awareness[mine]["user"]["name"] != "Taker"
    for client in (observer, taker, back):
        await client.ws.close()


async def test_a_large_change_goes_through_daphne_and_an_oversized_one_gets_4413(stack):
    alice = stack.user_with_notebook("large@example.com")
    port = stack.start_worker()
    client = await open_client(port, alice["notebook_id"], alice["cookie"])
    client.text().insert(0, "x" * 3_000_000)  # over daphne's stock 1 MiB limit
    await client.flush()
    other = await open_client(port, alice["notebook_id"], alice["cookie"])
    await eventually_async(
        lambda: len(other.source()) == 3_000_000, what="the 3 MB change at the other client"
    )
    client.text().insert(0, "y" * 17_000_000)  # over COLLAB MAX_MESSAGE_BYTES (16 MiB)
    await client.flush()
    await asyncio.wait_for(client.reader, 10)
    assert client.ws.close_code == 4413
    assert client.ws.close_reason == "That change is larger than the server accepts."
    await other.ws.close()


async def test_clients_of_a_killed_worker_reconnect_to_the_survivor_and_lose_nothing(stack):
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
    await eventually_async(
        lambda: all(t.client.source() == stored for t in [*typists, observer]),
        timeout=15,
        what="clients to converge",
    )
    for t in [*typists, observer]:
        await t.stop()


async def test_edits_rarely_reach_an_observer_twice_with_writers_on_both_workers(stack):

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
    try:
        await eventually_async(
            lambda: all(len(c) == wanted for c in seen), what="every edit at both observers"
        )
    finally:
        for t in typists:
            await t.stop()
        for task in observers:
            task.cancel()
    for counter in seen:
        # Before gap repair relayed rows by number, 12-16% of deliveries were repeats on
        # PostgreSQL; about 1% remain (an open question, see docs/architecture.md).
        repeats = sum(n - 1 for n in counter.values())
        assert repeats <= 0.03 * wanted, repeats


async def test_an_editor_on_another_worker_cannot_write_under_a_present_persons_client_id(stack):
    """Yjs names an item by its writer's client id and clock. Bob, on the other worker, wrote an
    item under Alice's client id (her presence names it) at her next clock while she typed: his
    worker's room took his, the database and hers took hers, and every copy held the same state
    vectors, so nothing ever repaired the difference (measured through nginx: a fresh joiner of
    Bob's worker saw his text, the database hers). His update is refused; hers is saved, and
    both workers' copies equal the database's."""
    alice = stack.user_with_notebook("forged@example.com")
    bob = stack.user_with_notebook("forger@example.com", notebook=None)
    nid = alice["notebook_id"]
    stack.call("share_with", nid, "forger@example.com", "editor")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    a = await open_client(a_port, nid, alice["cookie"])
    b = await open_client(b_port, nid, bob["cookie"])
    await a.set_awareness({"cell": "c1"})
    a.text().insert(0, "alice ")
    await a.flush()
    await eventually_async(
        lambda: b.source().startswith("alice ") and a.doc.client_id in b.awareness, what="Alice at B"
    )
    forger = Doc(client_id=a.doc.client_id)
    forger.apply_update(b.doc.get_update())
    forged: list[bytes] = []
    forger.observe(lambda event: forged.append(event.update))
    forger.get("cells", type=Array)[0]["source"].insert(0, "forged ")
    await b.ws.send(protocol.sync_update(forged[0]))
    a.text().insert(0, "mine ")
    await a.flush()
    await eventually_async(lambda: b.ws.close_code is not None, what="the forger to be closed")
    assert b.ws.close_code == 4400, b.ws.close_reason
    await eventually_async(
        lambda: stack.stored_source(nid).startswith("mine alice "), what="Alice's edit to be saved"
    )
    stored = stack.stored_source(nid)
    for port in (a_port, b_port):
        fresh = await open_client(port, nid, alice["cookie"])
        await eventually_async(lambda fresh=fresh: fresh.source() == stored, what=f"worker {port} to hold it")
        await fresh.ws.close()
    assert a.source() == stored
    await a.ws.close()


@pytest.mark.parametrize("how", ["writing", "showing presence"])
async def test_an_editor_cannot_take_a_persons_client_id_on_a_worker_that_loaded_after(stack, how):
    """Presence lives in a worker's memory and a client renews it every 15 s: a worker whose
    room loaded after Alice showed presence on the other did not know her client id. Bob, joining
    there, wrote under it at her next clock: he was not refused, the database held his text,
    and Alice's next keystroke at that clock was dropped without a word, her copy never equal
    to anyone's again. Or he showed presence under it, and his stamped state replaced hers on
    her worker. Who holds a client id is kept in the database (`notebooks.claims`)."""
    alice = stack.user_with_notebook(f"first-{how[0]}@example.com")
    bob = stack.user_with_notebook(f"late-{how[0]}@example.com", notebook=None)
    nid = alice["notebook_id"]
    stack.call("share_with", nid, f"late-{how[0]}@example.com", "editor")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    a = await open_client(a_port, nid, alice["cookie"])
    await a.set_awareness({"cell": "c1"})
    a.text().insert(0, "alice ")
    await a.flush()
    await eventually_async(lambda: stack.stored_source(nid).startswith("alice "), what="Alice's edit saved")
    b = await open_client(b_port, nid, bob["cookie"])  # B's room loads now
    await eventually_async(lambda: b.source().startswith("alice "), what="Bob's copy")
    if how == "showing presence":
        await b.set_awareness({"cell": "taken"}, client_id=a.doc.client_id, clock=100)
        await b.set_awareness({"cell": "bob"}, clock=1)  # his own, after: relayed once the other is
        await eventually_async(lambda: b.doc.client_id in a.awareness, what="Bob's own presence at A")
        assert a.awareness[a.doc.client_id]["cell"] == "c1", a.awareness[a.doc.client_id]
        await a.ws.close()
        await b.ws.close()
        return
    forger = Doc(client_id=a.doc.client_id)
    forger.apply_update(b.doc.get_update())
    forged: list[bytes] = []
    forger.observe(lambda event: forged.append(event.update))
    forger.get("cells", type=Array)[0]["source"].insert(0, "forged ")
    await b.ws.send(protocol.sync_update(forged[0]))
    await eventually_async(lambda: b.ws.close_code is not None, what="the forger to be closed")
    assert b.ws.close_code == 4400, b.ws.close_reason
    a.text().insert(0, "mine ")
    await a.flush()
    await eventually_async(
        lambda: stack.stored_source(nid).startswith("mine alice "), what="Alice's edit to be saved"
    )
    stored = stack.stored_source(nid)
    for port in (a_port, b_port):
        fresh = await open_client(port, nid, alice["cookie"])
        await eventually_async(lambda fresh=fresh: fresh.source() == stored, what=f"worker {port} to hold it")
        await fresh.ws.close()
    assert a.source() == stored
    await a.ws.close()


async def _close_code(ws, timeout: float = 5) -> int | None:
    """The code the server closed `ws` with, reading its frames; None if it stays open."""
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


async def test_an_editor_whose_change_made_a_room_reload_is_kept_out_on_every_worker(stack):
    """A change too large to be read before it is applied that turns out to wait for another
    makes the room reload for everyone on that worker, and its person is kept out for a while
    (`COLLAB_KEEP_OUT_AFTER_RELOAD`). Kept out on that worker only, they joined the other at once
    (nginx sends a socket to the worker with the fewest) and reloaded its room too: through
    nginx, a link guest and an editor each reloaded both workers' rooms within seconds. They are
    kept out on every worker."""
    alice = stack.user_with_notebook("reload-owner@example.com")
    bob = stack.user_with_notebook("reloader@example.com", notebook=None)
    nid = alice["notebook_id"]
    stack.call("share_with", nid, "reloader@example.com", "editor")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    here, there = [await open_client(port, nid, alice["cookie"]) for port in (a_port, b_port)]
    b = await open_client(a_port, nid, bob["cookie"])
    b.text().insert(0, "a")
    b._outbox.clear()  # never sent: the next one waits for it
    b.text().insert(0, "b" * 40_000)
    await b.flush()
    await eventually_async(lambda: b.ws.close_code is not None, what="the editor to be closed")
    assert b.ws.close_code == 4400
    await eventually_async(lambda: here.ws.close_code is not None, what="the room to reload")
    assert here.ws.close_code == 4503
    for port in (a_port, b_port):
        assert await _close_code(await connect(port, nid, bob["cookie"])) == 4429, port
    assert there.ws.close_code is None
    again = await open_client(a_port, nid, alice["cookie"])  # everyone else comes back
    for client in (again, there):
        await client.ws.close()


async def test_an_edit_costs_redis_one_command_however_many_workers_have_the_room_open(stack):
    """Each batch is published once (Redis pub/sub): with channels-redis groups every batch cost
    the sender four commands and every worker of the room three more, its own included."""
    import redis

    alice = stack.user_with_notebook("redis-commands@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    clients = [await open_client(stack.start_worker(), nid, cookie) for _ in range(3)]
    await settle(clients)
    server = redis.Redis(port=stack.redis_port)
    # Joining may leave presence or claim traffic in flight: count from a quiet moment.
    await eventually_async(quiet(clients[1]), timeout=5, every=0.3, what="the joins to settle")
    server.config_resetstat()
    started = time.monotonic()
    edits = 20
    for i in range(edits):
        text = clients[0].text()
        text.insert(len(text), f"{i % 10}")
        await clients[0].flush()
        expected = clients[0].source()
        await eventually_async(
            lambda e=expected: all(c.source() == e for c in clients[1:]), timeout=5, what="the edit to cross"
        )
    stats = server.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
    # The idle workers' liveness checks, and rooms of earlier tests of this module unloading.
    for name in ("config|resetstat", "ping", "hello", "subscribe", "unsubscribe"):
        calls.pop(name, None)
    # Unrelated commands fall in the window: each worker's channel layer (the kernel cluster's)
    # asks Redis again every 5 s while idle (BZPOPMIN and its cleanup, 4 commands; 12 more in a
    # CI run whose edits took over 5 s), and a kernel-cluster message costs 4. Through
    # channel-layer groups the edits alone cost 700.
    idle_rounds = int((time.monotonic() - started) // 5) + 1
    assert calls.get("publish", 0) >= edits
    assert sum(calls.values()) <= edits + 8 + 4 * len(clients) * idle_rounds, calls
    server.close()


async def test_large_changes_reach_the_other_workers_from_the_database_not_through_redis(stack):
    """Redis cuts off a subscriber that falls 32 MB behind (pub/sub's output-buffer limit): a
    few large changes in a row must not make an editor able to cut every worker's fan-out."""
    import redis

    alice = stack.user_with_notebook("large-fanout@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    a, b = stack.start_worker(), stack.start_worker()
    writer, reader = await open_client(a, nid, cookie), await open_client(b, nid, cookie)
    server = redis.Redis(port=stack.redis_port)
    before = server.info("stats")["total_net_input_bytes"]
    for i in range(4):
        writer.text().insert(0, str(i) * 4_000_000)
        await writer.flush()
    await eventually_async(lambda: len(reader.source()) == 16_000_000, timeout=20, what="16 MB at the reader")
    assert server.info("stats")["total_net_input_bytes"] - before < 1_000_000
    assert "fan-out down" not in stack.log(a) + stack.log(b)
    writer.text().insert(0, "small")  # and small ones still cross through Redis
    await writer.flush()
    await eventually_async(lambda: reader.source().startswith("small"), timeout=5, what="a small edit")
    for client in (writer, reader):
        await client.ws.close()
    server.close()
