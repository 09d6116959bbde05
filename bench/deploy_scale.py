"""Scale of the deployment: 2 and 4 daphne workers behind the repo's nginx (deploy/nginx.conf.in),
redis-server, SQLite or DATABASE_URL's PostgreSQL, and the same load against pycrdt-websocket
(bench/pycrdt_server.py, one process) in the same run; everything on free loopback ports.

    .venv/bin/python bench/deploy_scale.py                 # about 5-8 minutes on 2 cores
    .venv/bin/python bench/deploy_scale.py --observers 999 --rooms 1000 --seconds 10 --workers 2 4

Scenarios (bounded in count and time):
- lecture: one room, 1 writer at 20 updates/s, N observers, all through nginx (which spreads
  sockets over the workers): delivery latency p50/p99 and the share of updates delivered;
- 10 writers x 10 updates/s in one room with the same observers;
- the same two against pycrdt-websocket (its rooms start empty: the first writer adds the one
  cell the app's blank notebook has);
- many rooms on one worker (directly, one client each; after the last worker count) and on the
  pycrdt-websocket process: join p50/p99, RSS per room;
- worker start: process start to first answer of /healthz, and what `config.asgi` imports.
Prints a Markdown table (bench/README.md keeps the last one).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
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
import psutil

django.setup()

from pycrdt import Array, Map, Text  # noqa: E402

from bench.rt_scenarios import percentile  # noqa: E402
from bench.rt_ws import YClient, marker, no_collector_pauses, observe_in_child  # noqa: E402
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


def seed_first_cell(client: YClient) -> None:
    """pycrdt-websocket's rooms start empty: give the room the app's blank notebook's one cell."""
    cells = client.doc.get("cells", type=Array)
    if len(cells) == 0:
        before = client.doc.get_state()
        cells.append(Map({"id": "c0", "cell_type": "code", "source": Text(""), "metadata": Map()}))
        client.send_update(client.doc.get_update(before))


class CpuMeter:
    """CPU seconds (user + system) of named groups of processes over a window; a server
    process's children count with it (nginx's workers with its master), the load generator is
    this process and its observer processes (the servers are its children too)."""

    def __init__(self, groups: dict[str, list[int]], generator: list[int] = ()):
        self.groups = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.groups["load generator"] = [psutil.Process(), *(psutil.Process(pid) for pid in generator)]
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        totals = {}
        for name, procs in self.groups.items():
            total = 0.0
            for proc in procs:
                children = proc.children(recursive=True) if name != "load generator" else []
                for p in [proc, *children]:
                    try:
                        t = p.cpu_times()
                    except psutil.NoSuchProcess:
                        continue
                    total += t.user + t.system
            totals[name] = total
        return totals

    def used(self) -> dict[str, float]:
        end = self._now()
        return {name: end[name] - self.start[name] for name in end}


def cpu_text(cpu: dict[str, float], frames: int) -> str:
    """CPU seconds per 1,000 frames delivered to observers, per group of processes."""
    per = 1000 / max(1, frames)
    return ", ".join(f"{name} {seconds * per:.3f}" for name, seconds in cpu.items())


async def lecture(
    url: str,
    headers: dict,
    observers: int,
    writers: int,
    rate: float,
    seconds: float,
    procs: dict,
    observer_procs: int = 1,
):
    tag = f"L{writers}x{int(rate)}"
    authors = [await YClient().open(url, headers)]
    await asyncio.wait_for(authors[0].synced, 20)
    seed_first_cell(authors[0])
    for _ in range(writers - 1):
        authors.append(await YClient().open(url, headers))
        await asyncio.wait_for(authors[-1].synced, 20)
    watching = ObserverProcesses(url, headers, tag.encode(), observers, observer_procs)
    await watching.open()
    try:
        await asyncio.sleep(1)  # every observer's handshake answered
        sent = 0

        async def write(index: int, author: YClient) -> None:
            nonlocal sent
            for seq in range(int(seconds * rate)):
                author.send_update(author.append_to_first_cell(marker(tag, index, seq)))
                sent += 1
                await asyncio.sleep(1 / rate)

        with no_collector_pauses():
            meter = CpuMeter(procs, watching.pids)
            watching.go()
            print(f"{tag}: writing for {seconds:g} s", file=sys.stderr, flush=True)
            await asyncio.gather(*(write(i, a) for i, a in enumerate(authors)))
        latencies, frames = await watching.collect(sent, 10)
        cpu = meter.used()
    finally:
        await watching.close()
        for client in authors:
            await client.close()
    delivered = 100 * len(latencies) / max(1, sent * observers)
    return {
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "delivered": delivered,
        "cpu": cpu,
        "frames": frames,
    }


class ObserverProcesses:
    """`count` observers spread over `processes` processes (`rt_ws.observe_in_child`)."""

    def __init__(self, url: str, headers: dict, tag: bytes, count: int, processes: int):
        context = multiprocessing.get_context("spawn")
        processes = max(1, min(processes, count))
        shares = [count // processes + (i < count % processes) for i in range(processes)]
        self.children = []
        for share in shares:
            here, there = context.Pipe()
            args = (there, url, headers, tag, share)
            proc = context.Process(target=observe_in_child, args=args, daemon=True)
            self.children.append((proc, here))
        self.pids: list[int] = []

    async def _recv(self, conn, timeout: float):
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, conn.poll, timeout):
            raise TimeoutError("an observer process did not answer")
        return conn.recv()

    async def open(self) -> None:
        for proc, _ in self.children:
            proc.start()
        for _, conn in self.children:
            _, pid = await self._recv(conn, 120)
            self.pids.append(pid)

    def go(self) -> None:
        for _, conn in self.children:
            conn.send(("go",))

    async def collect(self, updates: int, seconds: float) -> tuple[list[float], int]:
        for _, conn in self.children:
            conn.send(("stop", updates, seconds))
        latencies, frames = [], 0
        for _, conn in self.children:
            _, got, seen = await self._recv(conn, seconds + 30)
            latencies += got
            frames += seen
        return latencies, frames

    async def close(self) -> None:
        for proc, _ in self.children:
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 30)
            if proc.is_alive():
                proc.kill()


async def many_rooms(urls: list[str], pid: int, headers: dict):
    before = rss_kib(pid)
    joins, clients = [], []
    with no_collector_pauses():
        for url in urls:
            start = time.monotonic()
            client = await YClient(follow=False).open(url, headers)
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
        "rss_per_room": (after - before) / len(urls),
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


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def start_nginx(stack: Stack, workers: list[int], run_dir: Path) -> tuple[int, subprocess.Popen]:
    port = free_port()
    conf = run_dir / f"nginx-{port}.conf"
    conf.write_text(nginx_conf(f"127.0.0.1:{port}", [f"127.0.0.1:{w}" for w in workers], run_dir))
    argv = nginx_argv(conf, run_dir)
    argv[0] = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = stack._spawn(argv, log=f"nginx-{port}.log")
    wait_for_port(port, proc)
    return port, proc


def start_pycrdt(stack: Stack) -> tuple[int, int]:
    """bench/pycrdt_server.py under daphne, its store in the stack's directory: (port, pid)."""
    port = free_port()
    env = {"PYCRDT_BENCH_STORE": str(stack.tmp / "ystore.sqlite3")}
    proc = stack._spawn(
        [PYTHON, "-m", "daphne", "-p", str(port), "bench.pycrdt_server:application"], "pycrdt.log", env
    )
    wait_for_port(port, proc)
    return port, proc.pid


async def lectures(args, name: str, url: str, headers: dict, rows: list, procs: dict) -> None:
    for writers, rate in ((1, 20), (10, 10)):
        result = await lecture(
            url, headers, args.observers, writers, rate, args.seconds, procs, args.observer_procs
        )
        label = (
            f"{name}: 1 room, {writers} writer{'s' * (writers > 1)} x {rate}/s, {args.observers} observers"
        )
        rows.append((label, result, loadavg()))
        print(rows[-1], flush=True)


async def run(args) -> None:
    stack = Stack(
        COLLAB_MAX_SOCKETS_PER_ROOM="2000", COLLAB_MAX_SOCKETS_PER_PERSON="5000", DISABLE_RATE_LIMITS="true"
    )
    run_dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    run_dir.chmod(0o755)
    rows: list = []
    try:
        cookie, ids = notebooks(stack, "bench@example.com", args.rooms + 2)
        for count in args.workers:
            workers = [stack.start_worker() for _ in range(count)]
            port, nginx = start_nginx(stack, workers, run_dir)
            headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
            room = ids[0] if count == args.workers[0] else ids[1]
            url = f"ws://127.0.0.1:{port}/ws/notebooks/{room}"
            procs = {
                "workers": [stack.workers[w].pid for w in workers],
                "nginx": [nginx.pid],
                "redis": [stack.redis.pid],
            }
            await lectures(args, f"app, {count} workers via nginx", url, headers, rows, procs)
            if count == args.workers[-1]:
                direct = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{workers[0]}"}
                urls = [f"ws://127.0.0.1:{workers[0]}/ws/notebooks/{i}" for i in ids[2:]]
                app_rooms = await many_rooms(urls, stack.workers[workers[0]].pid, direct)
                app_rooms["load"] = loadavg()
            nginx.terminate()
            nginx.wait(10)
            for worker in workers:
                stack.kill_worker(worker)
        room_rows = [("app, one worker", app_rooms)]
        if not args.skip_pycrdt:
            port, pid = start_pycrdt(stack)
            headers = {"Origin": f"http://127.0.0.1:{port}"}
            url = f"ws://127.0.0.1:{port}/lecture"
            await lectures(args, "pycrdt-websocket, 1 process", url, headers, rows, {"server": [pid]})
            urls = [f"ws://127.0.0.1:{port}/room-{i}" for i in range(args.rooms)]
            pycrdt_rooms = await many_rooms(urls, pid, headers)
            pycrdt_rooms["load"] = loadavg()
            room_rows.append(("pycrdt-websocket", pycrdt_rooms))
        starts = worker_start(stack)
        print("\n| scenario | p50 ms | p99 ms | delivered / other | loadavg |\n|---|---|---|---|---|")
        for name, r, load in rows:
            print(f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {r['delivered']:.1f} % | {load} |")
        for name, r in room_rows:
            print(
                f"| {name}: {args.rooms} rooms, one client each: join | {r['p50']:.1f} | "
                f"{r['p99']:.1f} | RSS {r['rss_per_room']:.0f} KiB per room | {r['load']} |"
            )
        print(
            "\nCPU seconds per 1,000 frames delivered to observers (frames counted; every process"
            " of the machine's 2 cores, the load generator included):\n"
        )
        for name, r, _ in rows:
            print(f"- {name}: {cpu_text(r['cpu'], r['frames'])} ({r['frames']:,} frames)")
        print()
        fastest, slowest = 1000 * min(starts), 1000 * max(starts)
        print(
            f"| worker start to first /healthz answer (3 runs) | {fastest:.0f} | {slowest:.0f} | min / max"
            f" | {loadavg()} |"
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
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--skip-pycrdt", action="store_true", help="the app only")
    parser.add_argument(
        "--observer-procs",
        type=int,
        default=2,
        help="processes the observers are spread over (1: all in this process, as before)",
    )
    args = parser.parse_args()
    args.observers = min(args.observers, 1000)
    args.rooms = min(args.rooms, 2000)
    args.workers = [min(max(1, n), 8) for n in args.workers]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
