"""Scale of the deployment: 2 daphne workers behind the repo's nginx (deploy/nginx.conf.in),
redis-server, SQLite or DATABASE_URL's PostgreSQL, everything on free loopback ports.

    .venv/bin/python bench/deploy_scale.py                 # about 2-3 minutes on 2 cores
    .venv/bin/python bench/deploy_scale.py --observers 999 --rooms 1000 --seconds 10

Scenarios (bounded in count and time):
- lecture: one room, 1 writer at 20 updates/s, N observers, all through nginx (which spreads
  sockets over both workers): delivery latency p50/p99 and the share of updates delivered;
- 10 writers x 10 updates/s in one room with the same observers;
- many rooms on one worker (directly, one client each): join p50/p99, worker RSS per room;
- worker start: process start to first answer of /healthz, and what `config.asgi` imports.
Prints a Markdown table (bench/README.md keeps the last one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from bench.rt_scenarios import percentile  # noqa: E402
from bench.rt_ws import Observer, YClient, marker  # noqa: E402
from config.deploy import nginx_argv, nginx_conf  # noqa: E402
from config.serving import daphne_args  # noqa: E402
from tests.support.processes import PYTHON, Stack, free_port, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def notebooks(stack: Stack, email: str, count: int) -> tuple[str, list[str]]:
    out = stack.django(
        "import json, uuid\nfrom tests.support.processes import make_user_and_notebook\n"
        "from accounts.models import User\nfrom notebooks import actions\n"
        f"o = make_user_and_notebook({email!r}, 'null')\n"
        "u = User.objects.get(pk=o['user_id'])\n"
        f"ids = [str(actions.create_blank(u, title=f'n{{i}}').pk) for i in range({count})]\n"
        "print(json.dumps({'cookie': o['cookie'], 'ids': ids}))"
    )
    return out["cookie"], out["ids"]


async def lecture(
    port: int, room: str, headers: dict, observers: int, writers: int, rate: float, seconds: float
):
    latencies: list[float] = []
    url = f"ws://127.0.0.1:{port}/ws/notebooks/{room}"
    tag = f"L{writers}x{int(rate)}"
    watching = []
    for start in range(0, observers, 50):  # open in waves: a burst of handshakes is not the test
        batch = [
            Observer(tag.encode(), latencies).open(url, headers) for _ in range(min(50, observers - start))
        ]
        watching += await asyncio.gather(*batch)
    authors = [await YClient().open(url, headers) for _ in range(writers)]
    for author in authors:
        await asyncio.wait_for(author.synced, 20)
    sent = 0

    async def write(index: int, author: YClient) -> None:
        nonlocal sent
        for seq in range(int(seconds * rate)):
            author.send_update(author.append_to_first_cell(marker(tag, index, seq)))
            sent += 1
            await asyncio.sleep(1 / rate)

    await asyncio.gather(*(write(i, a) for i, a in enumerate(authors)))
    deadline = time.monotonic() + 10
    while len(latencies) < sent * observers and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for client in watching + authors:
        await client.close()
    delivered = 100 * len(latencies) / max(1, sent * observers)
    return {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "delivered": delivered}


async def many_rooms(port: int, pid: int, rooms: list[str], headers: dict):
    before = rss_kib(pid)
    joins, clients = [], []
    for room in rooms:
        start = time.monotonic()
        client = await YClient(follow=False).open(f"ws://127.0.0.1:{port}/ws/notebooks/{room}", headers)
        await asyncio.wait_for(client.synced, 20)
        joins.append((time.monotonic() - start) * 1000)
        clients.append(client)
    await asyncio.sleep(1)
    after = rss_kib(pid)
    for client in clients:
        await client.close()
    return {
        "p50": percentile(joins, 0.5),
        "p99": percentile(joins, 0.99),
        "rss_per_room": (after - before) / len(rooms),
    }


def worker_start(stack: Stack, runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        port = free_port()
        start = time.monotonic()
        proc = subprocess.Popen(
            [PYTHON, "-m", "daphne", *daphne_args("127.0.0.1", port)], cwd=ROOT, env=stack.env
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                        r.read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() - start > 30:
                        raise
                    time.sleep(0.02)
            times.append(time.monotonic() - start)
        finally:
            proc.terminate()
            proc.wait(10)
    return times


def top_imports(stack: Stack, count: int = 6) -> list[tuple[str, float]]:
    code = "import django; django.setup(); import config.asgi"
    env = {**stack.env, "DJANGO_SETTINGS_MODULE": "config.settings"}
    err = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    ).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(2)) <= 2:  # top-level imports only
            rows.append((m.group(3), int(m.group(1)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:count]


async def run(args) -> None:
    stack = Stack(
        COLLAB_MAX_SOCKETS_PER_ROOM="2000", COLLAB_MAX_SOCKETS_PER_PERSON="5000", DISABLE_RATE_LIMITS="true"
    )
    run_dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    run_dir.chmod(0o755)
    try:
        workers = [stack.start_worker() for _ in range(2)]
        port = free_port()
        conf = run_dir / "nginx.conf"
        conf.write_text(nginx_conf(f"127.0.0.1:{port}", [f"127.0.0.1:{w}" for w in workers], run_dir))
        argv = nginx_argv(conf, run_dir)
        argv[0] = shutil.which("nginx") or "/usr/sbin/nginx"
        wait_for_port(port, stack._spawn(argv, log="nginx.log"))
        cookie, ids = notebooks(stack, "bench@example.com", args.rooms + 1)
        headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
        rows = []
        one = await lecture(port, ids[0], headers, args.observers, 1, 20, args.seconds)
        rows.append((f"1 room, 1 writer x 20/s, {args.observers} observers, via nginx", one))
        ten = await lecture(port, ids[0], headers, args.observers, 10, 10, args.seconds)
        rows.append((f"1 room, 10 writers x 10/s, {args.observers} observers, via nginx", ten))
        direct = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{workers[0]}"}
        rooms = await many_rooms(workers[0], stack.workers[workers[0]].pid, ids[1:], direct)
        starts = worker_start(stack)
        print("\n| scenario | p50 ms | p99 ms | delivered / other |\n|---|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {r['delivered']:.1f} % |")
        print(
            f"| {args.rooms} rooms on one worker, one client each: join | {rooms['p50']:.1f} | "
            f"{rooms['p99']:.1f} | RSS {rooms['rss_per_room']:.0f} KiB per room |"
        )
        fastest, slowest = 1000 * min(starts), 1000 * max(starts)
        print(
            f"| worker start to first /healthz answer (3 runs) | {fastest:.0f} | {slowest:.0f} | min / max |"
        )
        print(
            "\nSlowest top-level imports of a worker:",
            ", ".join(f"{n} {s:.2f} s" for n, s in top_imports(stack)),
        )
    finally:
        stack.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--observers", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    args.observers = min(args.observers, 1000)
    args.rooms = min(args.rooms, 2000)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
