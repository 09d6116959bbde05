"""Faults with real processes: two daphne workers, their own redis-server and the database
behind a proxy that can refuse or cut connections. Every edit typed must end up saved (a
client told to reconnect sends it again), and notebooks must open again within seconds."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
from urllib.parse import urlsplit

import httpx
import pytest
import websockets

from tests.support.faults import TcpProxy, Typist, all_saved, type_for
from tests.support.processes import Stack, start_proxy
from tests.support.waiting import eventually_async
from tests.support.yclient import connect, open_client, settle

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def pg_stack():
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("the database outage tests need PostgreSQL: set DATABASE_URL=postgres://...")
    stack = Stack(redis=True)
    parts = urlsplit(stack.database_url)
    proxy = TcpProxy(parts.hostname, parts.port or 5432)
    yield stack, proxy
    proxy.close()
    stack.close()


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=True)
    yield stack
    stack.close()


@pytest.mark.parametrize("fault", ["refused for 10 s", "connections cut once", "refused past the retries"])
async def test_a_database_outage_loses_no_edit_and_notebooks_open_again(pg_stack, fault):
    stack, proxy = pg_stack
    alice = stack.user_with_notebook(f"db-{fault.replace(' ', '-')}@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    via_proxy = {"DATABASE_URL": proxy.url_for(stack.database_url), "DB_CONN_MAX_AGE": "60"}
    if fault == "refused past the retries":  # the writers give up: their clients are told
        via_proxy["COLLAB_PERSIST_RETRY_FOR"] = "2"
    ports = [stack.start_worker(**via_proxy), stack.start_worker(**via_proxy)]
    typists = [Typist([port], nid, cookie, f"{k}{'ab'[i]}") for k in range(2) for i, port in enumerate(ports)]
    for t in typists:
        await t.start()
    await type_for(typists, 1.0)
    if fault == "refused for 10 s":
        proxy.refuse(10)
        await type_for(typists, 10.0)
    elif fault == "refused past the retries":
        proxy.refuse(6)
        await type_for(typists, 6.0)
    else:
        proxy.cut()
        await type_for(typists, 2.0)
    # The database is back: a notebook opens on either worker within seconds.
    for port in ports:
        joiner = await asyncio.wait_for(open_client(port, nid, cookie), 10)
        await joiner.ws.close()
    await type_for(typists, 1.0)
    stored = await all_saved(stack, nid, typists)
    for t in typists:
        assert all(code == 4503 for code, _ in t.closes), t.closes
    if fault == "refused past the retries":
        assert all(t.closes for t in typists)  # every typist was told, and sent its edits again
    await eventually_async(
        lambda: all(t.client.source() == stored for t in typists), timeout=15, what="clients to converge"
    )
    for t in typists:
        await t.stop()


async def test_a_join_while_the_database_is_down_is_closed_with_4503_and_pages_show_no_traceback(pg_stack):
    stack, proxy = pg_stack
    alice = stack.user_with_notebook("db-join@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    port = stack.start_worker(DATABASE_URL=proxy.url_for(stack.database_url), DB_CONN_MAX_AGE="60")
    first = await open_client(port, nid, cookie)  # the worker holds a connection through the proxy
    await first.ws.close()
    proxy.refuse(60)
    try:
        # The session and user are read from the database before the consumer runs: each join
        # is still accepted and closed with 4503, which the client retries, not refused with 500.
        for _ in range(3):
            ws = await asyncio.wait_for(connect(port, nid, cookie), 10)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4503
            assert ws.close_reason == "The server cannot open this notebook right now. Reconnecting."
        pages = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for path in ("/", f"/n/{nid}/", "/healthz"):
                page = await http.get(path, headers={"Cookie": cookie})
                pages[path] = page.status_code
                assert "Traceback" not in page.text, page.text
                assert "psycopg" not in page.text, page.text
        assert pages == {"/": 503, f"/n/{nid}/": 503, "/healthz": 503}, pages
    finally:
        proxy.refusing_until = 0
    log = stack.log(port)
    assert "Exception inside application" not in log
    assert log.count("a websocket join found the database unreachable") == 3, log
    assert log.count("Service Unavailable: ") == 3, log  # one line per page, no traceback
    assert "Traceback" not in log, log
    joiner = await asyncio.wait_for(open_client(port, nid, cookie), 10)  # and back
    await joiner.ws.close()


async def test_a_database_that_hangs_answers_joins_with_4503_and_nginx_keeps_both_workers(pg_stack):
    """A database that neither answers nor refuses (a network that drops packets). Channels
    reads the session before the socket is accepted, and daphne drops a handshake it has not
    accepted within 5 s without an answer, which nginx takes for a failed worker (max_fails=1):
    both workers "temporarily disabled", every page and socket through nginx got 502 ("no live
    upstreams") through a 10 s hang and for 5.6-8 s after the database answered again, while
    joins straight to a worker worked 1 s after. A join waits a few seconds for its session at
    most and is closed with 4503, which the client retries."""
    stack, proxy = pg_stack
    alice = stack.user_with_notebook("db-hang@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    via_proxy = {"DATABASE_URL": proxy.url_for(stack.database_url), "DB_CONN_MAX_AGE": "60"}
    port, run_dir = start_proxy(stack, workers=2, **via_proxy)
    try:
        for _ in range(2):  # both workers hold connections through the proxy
            first = await open_client(port, nid, cookie)
            await first.ws.close()
        proxy.hang(8)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def outcome():
                try:
                    ws = await connect(port, nid, cookie)
                except websockets.InvalidStatus as e:
                    return f"HTTP {e.response.status_code}"
                try:
                    await ws.recv()
                    return "joined"  # its first frame: the join went through
                except websockets.ConnectionClosed:
                    return ws.close_code

            got = await asyncio.wait_for(outcome(), 15)
            took = loop.time() - started
            assert (got, took < 5) == (4503, True), f"{got} after {took:.1f} s"
            await eventually_async(
                lambda: loop.time() >= started + 8, timeout=15, what="the database to answer again"
            )
            back = loop.time()

            async def joined():
                try:
                    client = await asyncio.wait_for(open_client(port, nid, cookie), 5)
                except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed, TimeoutError):
                    return None
                await client.ws.close()
                return True

            await eventually_async(joined, timeout=15, what="a join through nginx", every=0.2)
            print(f"a join through nginx worked {loop.time() - back:.2f} s after the database answered")
            assert loop.time() - back < 3
        finally:
            proxy.hanging_until = 0
        errors = (run_dir / "nginx-error.log").read_text()
        assert "temporarily disabled" not in errors, errors
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def test_redis_restarting_loses_nothing_and_fan_out_recovers(stack):
    alice = stack.user_with_notebook("redis-restart@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    bob = stack.user_with_notebook("redis-unload@example.com")
    other, other_cookie = bob["notebook_id"], bob["cookie"]
    quick_unload = {"COLLAB_ROOM_UNLOAD_DELAY": "0.2"}
    a, b = stack.start_worker(**quick_unload), stack.start_worker(**quick_unload)
    writer, reader = Typist([a], nid, cookie, "w"), Typist([b], nid, cookie, "r")
    await writer.start()
    await reader.start()
    visitors = [await open_client(port, other, other_cookie) for port in (a, b)]
    await type_for([writer, reader], 0.5)
    async with httpx.AsyncClient(timeout=10) as http:  # any request makes a worker join the kernel cluster
        for port in (a, b):
            await http.get(f"http://127.0.0.1:{port}/accounts/login/")
    stack.kill_redis()
    for visitor in visitors:  # their rooms unload while Redis is down
        await visitor.ws.close()
    await type_for([writer, reader], 2.0)
    # While Redis is down, edits still cross workers (from the database) within seconds.
    await eventually_async(
        lambda: writer.tokens()[-1] in reader.client.source(), timeout=10, what="edits to cross while down"
    )
    stack.start_redis()
    loop = asyncio.get_running_loop()
    back, latencies = loop.time(), []
    while len(latencies) < 5 or statistics.median(latencies[-5:]) >= 0.05:
        assert loop.time() - back < 10, f"fan-out still slow 10 s after Redis returned: {latencies[-5:]}"
        await writer.type()
        token, sent = writer.tokens()[-1], loop.time()
        await eventually_async(
            lambda t=token: t in reader.client.source(), timeout=5, what="a probe to arrive", every=0.002
        )
        latencies.append(loop.time() - sent)
        await asyncio.sleep(0.1)
    stored = await all_saved(stack, nid, [writer, reader])
    await eventually_async(
        lambda: writer.client.source() == reader.client.source() == stored,
        timeout=10,
        what="clients to converge",
    )
    for port in (a, b):  # the notebooks whose rooms unloaded during the outage open again
        visitor = await asyncio.wait_for(open_client(port, other, other_cookie), 10)
        await visitor.ws.close()
    for port in (a, b):  # the kernel cluster's reader said so once, and once that it was back
        log = await eventually_async(
            lambda p=port: "kernel cluster: receiving restored" in stack.log(p) and stack.log(p),
            timeout=10,
            what="the kernel cluster's reader to recover",
        )
        assert log.count("kernel cluster: receiving failed") == 1, log
        assert log.count("kernel cluster: receiving restored") == 1, log
    for t in (writer, reader):
        await t.stop()


async def restart_redis(stack, ports) -> None:
    """Kill Redis, start it again empty, and wait until every worker's fan-out is back."""
    stack.kill_redis()
    stack.start_redis()
    for port in ports:
        await eventually_async(
            lambda p=port: "fan-out restored" in stack.log(p), timeout=10, what="the fan-out to come back"
        )


async def test_redis_restarting_while_nobody_types_is_noticed_and_the_next_edit_crosses_at_once(stack):
    """Nothing is published while Redis is away: the subscriptions' own failure must bring the
    workers back to Redis (a subscription Redis no longer has would hear nothing)."""
    alice = stack.user_with_notebook("redis-idle-restart@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    a, b = stack.start_worker(), stack.start_worker()
    writer, reader = await open_client(a, nid, cookie), await open_client(b, nid, cookie)
    await restart_redis(stack, (a, b))
    loop = asyncio.get_running_loop()
    for i in range(5):
        text = writer.text()
        text.insert(len(text), f"<{i}>")
        sent = loop.time()
        await writer.flush()
        await eventually_async(
            lambda i=i: f"<{i}>" in reader.source(), timeout=5, what="the edit", every=0.002
        )
        # Well under the rooms' periodic database check (COLLAB_RESYNC_INTERVAL 0.5 s here).
        assert loop.time() - sent < 0.25
    for client in (writer, reader):
        await client.ws.close()


async def test_the_first_edit_after_redis_restarted_while_nobody_typed_crosses_at_once(stack):
    """Edits before the restart leave the publishing pool holding connections to the Redis that
    went away: the first edit after it must still be published, not left to the other workers'
    idle check (30 s), and the outage is reported once."""
    alice = stack.user_with_notebook("redis-idle-restart-pool@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    a, b = stack.start_worker(), stack.start_worker()
    writer, reader = await open_client(a, nid, cookie), await open_client(b, nid, cookie)
    for i in range(3):  # published: the pools of both workers hold connections
        writer.text().insert(0, f"[{i}]")
        await writer.flush()
        reader.text().insert(0, f"({i})")
        await reader.flush()
    await settle([writer, reader])
    await restart_redis(stack, (a, b))
    loop = asyncio.get_running_loop()
    for client, other in ((writer, reader), (reader, writer)):
        text = client.text()
        text.insert(len(text), f"<{id(client)}>")
        sent = loop.time()
        await client.flush()
        await eventually_async(
            lambda c=client, o=other: f"<{id(c)}>" in o.source(), timeout=5, what="the edit", every=0.002
        )
        assert loop.time() - sent < 0.25
    for port in (a, b):
        assert stack.log(port).count("fan-out down") == 1, stack.log(port)
    for client in (writer, reader):
        await client.ws.close()
