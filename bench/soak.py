"""Soak: 2 daphne workers behind the repo's nginx, 20 rooms x 10 clients (1 writer at 5 updates/s
and 9 observers each) for 20 minutes; does anything grow or drift?

    .venv/bin/python bench/soak.py                       # 20 minutes (+1 to set up)
    .venv/bin/python bench/soak.py --minutes 2           # a smoke run
    .venv/bin/python bench/soak.py --replace             # writers replace, documents stay small
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/soak.py

Every 30 s: RSS of each worker and of redis-server, and /proc/loadavg. Every minute: the
delivery latency p50/p99 of the updates sent in that minute (over every observer). Writers append
a marker to the first cell, so documents grow; with `--replace` each marker replaces the cell's
text, so documents stay the same size and what grows is the server's own (the control). Database size
before, every `--size-every` minutes and after, with the update log's rows and (PostgreSQL) its
table's size: compaction deletes folded rows, autovacuum makes their space reusable, so the size
should level off. (PostgreSQL: pg_database_size; SQLite: the file and its WAL). Everything runs on
free loopback ports and is stopped at the end. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.deploy_scale import notebooks, rss_kib
from bench.rt_scenarios import percentile
from bench.rt_ws import Observer, YClient, marker
from config.deploy import nginx_argv, nginx_conf
from tests.support.processes import Stack, free_port, wait_for_port


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def database_sizes(stack: Stack, vacuum: bool = False) -> dict:
    """The database's size, and the update log's rows and table size (indexes and TOAST
    included): PostgreSQL's pg_database_size and pg_total_relation_size; SQLite's file and WAL.
    With `vacuum` (PostgreSQL), a plain VACUUM of the two tables first, as autovacuum would run
    (a server with autovacuum off never reuses the space of the rows compaction deletes)."""
    out = stack.django(
        "import json, os\nfrom django.db import connection\n"
        "from notebooks.models import Notebook, NotebookUpdate\n"
        "rows = NotebookUpdate.objects.count()\n"
        "if connection.vendor == 'postgresql':\n"
        "    with connection.cursor() as c:\n"
        f"        if {vacuum!r}:\n"
        "            c.execute('VACUUM ' + NotebookUpdate._meta.db_table + ', ' + Notebook._meta.db_table)\n"
        "        c.execute('SELECT pg_database_size(current_database()), pg_total_relation_size(%s),"
        " pg_total_relation_size(%s)', [NotebookUpdate._meta.db_table, Notebook._meta.db_table])\n"
        "        size, log, notebooks = c.fetchone()\n"
        "else:\n"
        "    name = str(connection.settings_dict['NAME'])\n"
        "    size = sum(os.path.getsize(p) for p in (name, name + '-wal') if os.path.exists(p))\n"
        "    log = notebooks = None\n"
        "print(json.dumps({'size': size, 'rows': rows, 'log': log, 'notebooks': notebooks}))"
    )
    return out


class Room:
    """One room: a writer and observers; latencies stamped with the minute they were sent."""

    def __init__(self, index: int, observers: int, replace: bool = False) -> None:
        self.replace = replace
        self.tag = f"S{index}"
        self.latencies: list[float] = []
        self.mark = 0  # latencies before this index were counted in an earlier minute
        self.observers = observers
        self.watching: list[Observer] = []
        self.writer: YClient | None = None

    async def open(self, url: str, headers: dict) -> None:
        self.watching = [
            await Observer(self.tag.encode(), self.latencies).open(url, headers)
            for _ in range(self.observers)
        ]
        self.writer = await YClient().open(url, headers)
        await asyncio.wait_for(self.writer.synced, 30)

    async def write(self, rate: float, until: float, sent: list[int]) -> None:
        assert self.writer is not None
        seq = 0
        while time.monotonic() < until:
            edit = self.writer.replace_first_cell if self.replace else self.writer.append_to_first_cell
            self.writer.send_update(edit(marker(self.tag, 0, seq)))
            seq += 1
            sent[0] += 1
            await asyncio.sleep(1 / rate)

    async def close(self) -> None:
        for client in [*self.watching, self.writer]:
            if client is not None:
                await client.close()


async def soak(args, stack: Stack, port: int, pids: dict[str, int]) -> None:
    cookie, ids = notebooks(stack, "soak@example.com", args.rooms)
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
    db_before = database_sizes(stack)
    sizes = [(0, db_before)]
    rooms = [Room(i, args.clients - 1, args.replace) for i in range(args.rooms)]
    for room, notebook in zip(rooms, ids, strict=True):
        await room.open(f"ws://127.0.0.1:{port}/ws/notebooks/{notebook}", headers)
    start = time.monotonic()
    until = start + 60 * args.minutes
    sent = [0]
    writers = [asyncio.create_task(r.write(args.rate, until, sent)) for r in rooms]
    samples, minutes = [], []
    next_sample = start
    while time.monotonic() < until + 0.5:
        if time.monotonic() >= next_sample:
            samples.append((time.monotonic() - start, {n: rss_kib(p) for n, p in pids.items()}, loadavg()))
            next_sample += 30
        elapsed = time.monotonic() - start
        if elapsed >= 60 * (len(minutes) + 1):
            minute = []
            for r in rooms:
                minute += r.latencies[r.mark :]
                r.mark = len(r.latencies)
            minutes.append(
                (len(minutes) + 1, percentile(minute, 0.5), percentile(minute, 0.99), len(minute), loadavg())
            )
            print(
                f"minute {len(minutes)}: p99 {minutes[-1][2]:.1f} ms,"
                f" {len(minute)} deliveries, load {loadavg()}",
                flush=True,
            )
            if len(minutes) % args.size_every == 0:
                sizes.append((len(minutes), await asyncio.to_thread(database_sizes, stack, args.vacuum)))
        await asyncio.sleep(0.5)
    await asyncio.gather(*writers)
    expected = sent[0] * (args.clients - 1)
    await asyncio.sleep(5)
    delivered = sum(len(r.latencies) for r in rooms)
    for room in rooms:
        await room.close()
    sizes.append(("end", database_sizes(stack)))
    report(args, samples, minutes, sizes, delivered, expected)


def report(args, samples, minutes, sizes, delivered, expected) -> None:
    names = list(samples[0][1])
    print(
        f"\n{args.rooms} rooms x {args.clients} clients (1 writer x {args.rate}/s each), 2 workers via nginx,"
        f" {args.minutes} min, writers {'replace' if args.replace else 'append'};"
        f" delivered {100 * delivered / max(1, expected):.2f} % of {expected}\n"
    )
    print("| t s | " + " | ".join(f"{n} RSS MiB" for n in names) + " | loadavg |")
    print("|---|" + "---|" * len(names) + "---|")
    for t, rss, load in samples:
        print(f"| {t:.0f} | " + " | ".join(f"{rss[n] / 1024:.1f}" for n in names) + f" | {load} |")
    print("\n| minute | p50 ms | p99 ms | deliveries | loadavg |\n|---|---|---|---|---|")
    for minute, p50, p99, count, load in minutes:
        print(f"| {minute} | {p50:.1f} | {p99:.1f} | {count} | {load} |")
    print("\n| minute | database MB | update log rows | update log table MB | notebooks table MB |")
    print("|---|---|---|---|---|")
    for minute, size in sizes:
        tables = [f"{size[k] / 1e6:.2f}" if size[k] is not None else "-" for k in ("log", "notebooks")]
        print(f"| {minute} | {size['size'] / 1e6:.2f} | {size['rows']:,} | {' | '.join(tables)} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--replace", action="store_true", help="writers replace the cell's text")
    parser.add_argument("--size-every", type=int, default=2, help="minutes between database size readings")
    parser.add_argument("--vacuum", action="store_true", help="VACUUM the two tables at each size reading")
    args = parser.parse_args()
    stack = Stack(COLLAB_MAX_SOCKETS_PER_PERSON="5000", DISABLE_RATE_LIMITS="true")
    run_dir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    run_dir.chmod(0o755)
    try:
        workers = [stack.start_worker() for _ in range(2)]
        port = free_port()
        conf = run_dir / "nginx.conf"
        conf.write_text(nginx_conf(f"127.0.0.1:{port}", [f"127.0.0.1:{w}" for w in workers], run_dir))
        argv = nginx_argv(conf, run_dir)
        argv[0] = shutil.which("nginx") or "/usr/sbin/nginx"
        wait_for_port(port, stack._spawn(argv, log="nginx.log"))
        pids = {f"worker {i + 1}": stack.workers[w].pid for i, w in enumerate(workers)}
        assert stack.redis is not None
        pids["redis"] = stack.redis.pid
        asyncio.run(soak(args, stack, port, pids))
    finally:
        stack.close()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
