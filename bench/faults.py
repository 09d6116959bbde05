"""Fault injection against two real daphne workers: the database refusing connections, its
connections cut, Redis killed and restarted, a worker killed. Prints, per scenario, the edits
typed, acknowledged (SAVED), stored and lost, and how long recovery took.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_ft .venv/bin/python bench/faults.py

Needs redis-server on the PATH; the database scenarios need PostgreSQL (DATABASE_URL), the
others also run on SQLite. Everything runs on free loopback ports and is stopped at the end.
Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from collab.protocol import parse_state_vector
from tests.support.faults import TcpProxy, Typist
from tests.support.processes import Stack
from tests.support.yclient import open_client


class Counted(Typist):
    """A typist that remembers its own clock after every edit, to count acknowledgements."""

    def __init__(self, *args):
        super().__init__(*args)
        self.clocks: list[int] = []

    async def type(self) -> None:
        await super().type()
        self.clocks.append(parse_state_vector(self.client.doc.get_state())[self.client.doc.client_id])

    def acknowledged(self) -> int:
        saved = parse_state_vector(self.client.saved_sv or b"\0").get(self.client.doc.client_id, 0)
        return sum(1 for clock in self.clocks if clock <= saved)


async def type_for(typists, seconds: float, every: float = 0.05) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for t in typists:
            await t.type()
        await asyncio.sleep(every)


async def join_time(ports, nid, cookie, limit: float = 60) -> float:
    """Seconds until a fresh client has joined on every worker."""
    start = time.monotonic()
    for port in ports:
        while True:
            try:
                client = await asyncio.wait_for(open_client(port, nid, cookie), 5)
                await client.ws.close()
                break
            except Exception:
                if time.monotonic() - start > limit:
                    return float("inf")
                await asyncio.sleep(0.2)
    return time.monotonic() - start


async def fanout_back(writer, reader, limit: float = 30) -> float:
    """Seconds until the median of 5 cross-worker deliveries is under 50 ms."""
    start, latencies = time.monotonic(), []
    while time.monotonic() - start < limit:
        await writer.type()
        token, sent = writer.tokens()[-1], time.monotonic()
        while token not in reader.client.source() and time.monotonic() - sent < 5:
            await asyncio.sleep(0.002)
        latencies.append(time.monotonic() - sent)
        if len(latencies) >= 5 and sorted(latencies[-5:])[2] < 0.05:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return float("inf")


async def outcome(stack, nid, typists, settle: float = 25) -> dict:
    end = time.monotonic() + settle
    wanted = [tok for t in typists for tok in t.tokens()]
    while True:
        stored = await asyncio.to_thread(stack.stored_source, nid)
        missing = sum(tok not in stored for tok in wanted)
        if not missing or time.monotonic() > end:
            break
        await asyncio.sleep(0.5)
    told = sum(len(t.closes) for t in typists)
    return {
        "sent": len(wanted),
        "acknowledged": sum(t.acknowledged() for t in typists),
        "stored": len(wanted) - missing,
        "lost": missing,
        "closes": told,
    }


async def scenario(stack, name, fault, proxy=None) -> dict:
    user = stack.user_with_notebook(f"{name.replace(' ', '-')}@example.com")
    nid, cookie = user["notebook_id"], user["cookie"]
    env = {"DATABASE_URL": proxy.url_for(stack.database_url)} if proxy else {}
    ports = [stack.start_worker(**env), stack.start_worker(**env)]
    typists = [
        Counted(ports if name == "worker SIGKILL" else [p], nid, cookie, f"{k}{i}")
        for i, p in enumerate(ports)
        for k in range(2)
    ]
    for t in typists:
        await t.start()
    await type_for(typists, 1.0)
    recovery = await fault(stack, proxy, ports, typists, nid, cookie)
    await type_for(typists, 1.0)
    row = await outcome(stack, nid, typists)
    for t in typists:
        await t.stop()
    for port in ports:
        if port in stack.workers:
            stack.kill_worker(port)
    return {"scenario": name, **row, **recovery}


async def db_refused(stack, proxy, ports, typists, nid, cookie):
    proxy.refuse(10)
    await type_for(typists, 10.0)
    return {"recovery": f"joins on both workers {await join_time(ports, nid, cookie):.2f} s after"}


async def db_cut(stack, proxy, ports, typists, nid, cookie):
    proxy.cut()
    await type_for(typists, 2.0)
    return {"recovery": f"joins on both workers {await join_time(ports, nid, cookie):.2f} s after"}


async def redis_restart(stack, proxy, ports, typists, nid, cookie):
    stack.kill_redis()
    await type_for(typists, 5.0)
    stack.start_redis()
    back = await fanout_back(typists[0], typists[-1])  # one on each worker
    return {"recovery": f"fan-out p50 < 50 ms {back:.2f} s after Redis returned"}


async def worker_kill(stack, proxy, ports, typists, nid, cookie):
    """Every typist starts on the first worker; after the kill each must be closed, then back
    on the survivor and acknowledged there."""
    stack.kill_worker(ports[0])
    start = time.monotonic()
    while any(not t.closes or t.ws is None for t in typists):
        await type_for(typists, 0.01, every=0.005)
    for t in typists:
        t.client.saved_sv = None
    while any(t.client.saved_sv is None for t in typists):
        await type_for(typists, 0.01, every=0.005)
    return {"recovery": f"all clients saving on the survivor {time.monotonic() - start:.2f} s after"}


async def main() -> None:
    rows = []
    pg = os.environ.get("DATABASE_URL", "").startswith("postgres") and "--no-db" not in sys.argv
    stack = Stack(redis=True)
    proxy = None
    try:
        if pg:
            parts = urlsplit(stack.database_url)
            proxy = TcpProxy(parts.hostname, parts.port or 5432)
            rows.append(await scenario(stack, "database refused 10 s", db_refused, proxy))
            rows.append(await scenario(stack, "database connections cut", db_cut, proxy))
        rows.append(await scenario(stack, "Redis killed 5 s, restarted", redis_restart))
        rows.append(await scenario(stack, "worker SIGKILL", worker_kill))
    finally:
        if proxy:
            proxy.close()
        stack.close()
    print("| scenario | sent | acknowledged | stored | lost | sockets closed | recovery |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['sent']} | {r['acknowledged']} | {r['stored']} | {r['lost']} "
            f"| {r['closes']} | {r['recovery']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
