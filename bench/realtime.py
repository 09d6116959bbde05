"""Real-time benchmark: this server (2 daphne workers + redis) against pycrdt-websocket (1 process).

    .venv/bin/python bench/realtime.py [--quick] [--only app|pycrdt]

Starts everything on free ports of 127.0.0.1 with its data in a temporary directory, runs every
scenario against each server in turn (only one server runs at a time, so they do not share the
two cores), stops every process it started (also on Ctrl-C or an error) and prints a Markdown
table. See bench/README.md for what each number means. The full run takes about 4 minutes;
`--quick` is a smoke run of 1-1.5 minutes with smaller counts.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rt_scenarios as sc
from rt_servers import Processes, Target, app_env, make_fixture, start_app, start_pycrdt

BLANKS = ["warm", "fanout1", "fanout10", "blast", "storage"]
QUICK = sc.Sizes(
    observers=20,
    fanout_seconds=3,
    settle_seconds=0.5,
    blast_seconds=2,
    drain_timeout=3,
    idle_timeout=10,
    typical_rooms=3,
    big_cells=500,
    second_joins=1,
    storage_edits=400,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_scenarios(target: Target, sizes: sc.Sizes, helper_pids: list[int]) -> dict:
    """Every scenario in turn, each starting from an idle server; one that fails is logged and
    shows as "failed" in the table, and the others still run."""
    o = sizes.observers
    steps = [
        ("warm-up", "warm", lambda: sc.warm_up(target)),
        (
            f"memory and joins ({sizes.typical_rooms} rooms, {sizes.big_cells}-cell notebook)",
            "memory",
            lambda: sc.memory_and_join(target, sizes),
        ),
        (
            f"fan-out, 1 writer x 20/s, {o} observers",
            "fanout1",
            lambda: sc.fanout(target, "fanout1", "fa", 1, 20, sizes, helper_pids),
        ),
        (
            f"fan-out, 10 writers x 10/s, {o} observers",
            "fanout10",
            lambda: sc.fanout(target, "fanout10", "fb", 10, 10, sizes, helper_pids),
        ),
        (
            f"persistence blast, {sizes.blast_clients_per_worker} clients per worker",
            "blast",
            lambda: sc.blast(target, "blast", sizes, helper_pids),
        ),
        (
            f"storage after {sizes.storage_edits:,} one-character edits",
            "storage",
            lambda: sc.storage(target, "storage", sizes, helper_pids),
        ),
    ]
    results: dict = {}
    for label, key, step in steps:
        log(f"{target.name}: {label}")
        try:
            results[key] = await step()
        except Exception as e:
            log(f"{target.name}: {label} failed: {e!r}")
        busy = await sc.wait_idle(target, helper_pids, sizes.idle_timeout)
        if busy > 1:
            log(f"{target.name}: busy for {busy:.1f} s after {label}")
        results.setdefault("busy_after", {})[key] = busy
    return results


def bench_app(tmp: Path, sizes: sc.Sizes) -> tuple[dict, Path]:
    procs = Processes(tmp / "app")
    procs.tmp.mkdir()
    try:
        log("app: redis, migrate, fixtures, 2 daphne workers")
        target, helpers = start_app(procs, 2, BLANKS, sizes.typical_rooms, sizes.big_cells)
        return asyncio.run(run_scenarios(target, sizes, helpers)), procs.tmp / "fixture"
    finally:
        procs.stop_all()


def bench_pycrdt(tmp: Path, sizes: sc.Sizes, fixture_dir: Path) -> dict:
    procs = Processes(tmp / "pycrdt")
    procs.tmp.mkdir()
    try:
        log("pycrdt-websocket: seed its store with the same documents, then restart it")
        names = [*BLANKS, *(f"typical{i:02d}" for i in range(sizes.typical_rooms)), "big"]
        asyncio.run(sc.seed(start_pycrdt(procs, "pycrdt-seeding"), sc.read_states(fixture_dir, names)))
        procs.stop_all()  # a fresh process, like the app's workers: memory is measured from there
        target = start_pycrdt(procs)
        return asyncio.run(run_scenarios(target, sizes, []))
    finally:
        procs.stop_all()


def fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def latency(f: dict) -> str:
    cell = f"{fmt(f['p50'], 1)} / {fmt(f['p99'], 1)} ms"
    if f["delivered"] < 0.999:
        cell += f" ({100 * f['delivered']:.1f}% delivered)"
    return cell


def blast_drain(b: dict) -> str:
    if b["drained"]:
        return f"{fmt(b['drain_s'] * 1000)} ms"
    return f"not after {fmt(b['drain_s'], 1)} s ({b['persisted']:,} of {b['sent']:,})"


def other_worker_join(m: dict) -> str:
    if m["join_first_other_worker_ms"] is None:
        return "n/a (1 process)"
    return f"{fmt(m['join_first_other_worker_ms'])} ms"


def storage(r: dict) -> str:
    s = r["storage"]
    kept = ""
    if s["stored_updates"] < s["edits"]:
        kept = f", only {s['stored_updates']:,} of {s['edits']:,} edits stored"
    return (
        f"{s['stored_bytes'] / 1024:,.1f} KiB (document: {s['doc_bytes'] / 1024:,.1f} / "
        f"{s['json_bytes'] / 1024:,.1f} KiB){kept}"
    )


def busy_after(r: dict) -> str:
    return " / ".join(f"{r['busy_after'][k]:.1f}" for k in ("fanout1", "fanout10")) + " s"


def others(r: dict) -> str:
    return " / ".join(fmt(r[k]["cpu_others"]) for k in ("fanout1", "fanout10", "blast")) + " %"


def rows(sizes: sc.Sizes) -> list[tuple[str, Callable[[dict], str]]]:
    o, cells = sizes.observers, f"{sizes.big_cells:,}"
    return [
        (f"fan-out p50 / p99, 1 writer x 20 updates/s, {o} observers", lambda r: latency(r["fanout1"])),
        (f"fan-out p50 / p99, 10 writers x 10 updates/s, {o} observers", lambda r: latency(r["fanout10"])),
        (
            "CPU in the 10-writer fan-out: server / load generator (% of one core)",
            lambda r: f"{fmt(r['fanout10']['cpu_server'])} / {fmt(r['fanout10']['cpu_loadgen'])} %",
        ),
        ("server still busy after the fan-out ended: 1 writer / 10 writers", busy_after),
        (
            "blast: updates/s persisted per worker process",
            lambda r: fmt(r["blast"]["persisted_per_s_per_worker"]),
        ),
        (
            "blast: updates/s echoed back to the senders (all processes)",
            lambda r: fmt(r["blast"]["echoed_per_s"]),
        ),
        ("blast: database holds every update ... after the last was sent", lambda r: blast_drain(r["blast"])),
        ("blast: server CPU (% of one core)", lambda r: f"{fmt(r['blast']['cpu_server'])} %"),
        (
            f"storage after {sizes.storage_edits:,} one-character edits to a blank notebook"
            " (document: Yjs state / .ipynb JSON)",
            storage,
        ),
        ("CPU used by unrelated processes: fan-out 1 / fan-out 10 / blast (% of one core)", others),
        (
            f"join {cells}-cell notebook: first (room not loaded) / second",
            lambda r: f"{fmt(r['memory']['join_first_ms'])} / {fmt(r['memory']['join_second_ms'])} ms",
        ),
        (
            "  of which until the server's step2 had arrived",
            lambda r: (
                f"{fmt(r['memory']['join_first_step2_ms'])} / {fmt(r['memory']['join_second_step2_ms'])} ms"
            ),
        ),
        (
            "  first join on worker 1 while the room is loaded on worker 0",
            lambda r: other_worker_join(r["memory"]),
        ),
        (
            f"memory per room ({sizes.typical_rooms} rooms of a 50-cell notebook)",
            lambda r: f"{fmt(r['memory']['room_kib'])} KiB",
        ),
        (
            f"RSS added by the {cells}-cell room / worker RSS with it loaded",
            lambda r: f"{fmt(r['memory']['big_mib'], 1)} / {fmt(r['memory']['rss_big_mib'])} MiB",
        ),
    ]


def safe(cell: Callable[[dict], str], result: dict) -> str:
    try:
        return cell(result)
    except KeyError:  # that scenario failed (see the log)
        return "failed"


def table(results: dict[str, dict], sizes: sc.Sizes) -> str:
    cols = [name for name in ("app", "pycrdt") if name in results]
    heads = {"app": "this server (2 workers + redis)", "pycrdt": "pycrdt-websocket 0.16.5 (1 process)"}
    lines = ["| metric | " + " | ".join(heads[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, cell in rows(sizes):
        lines.append(f"| {label} | " + " | ".join(safe(cell, results[c]) for c in cols) + " |")
    return "\n".join(lines)


def describe_run(quick: bool, seconds: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    kind = "--quick" if quick else "full run"
    return (
        f"{when}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {kind}, {seconds:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run under a minute")
    parser.add_argument("--only", choices=["app", "pycrdt"], help="benchmark only one server")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else sc.Sizes()

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    tmp = Path(tempfile.mkdtemp(prefix="realtime-bench-"))
    started = time.monotonic()
    results: dict[str, dict] = {}
    try:
        if args.only in (None, "app"):
            results["app"], fixture_dir = bench_app(tmp, sizes)
        else:  # the pycrdt server is seeded with the app's documents: make them without benchmarking
            fixture_dir = tmp / "app" / "fixture"
            fixture_dir.parent.mkdir()
            env = app_env(fixture_dir.parent, redis_port=0)  # no worker runs: redis is not needed
            make_fixture(env, fixture_dir, BLANKS, sizes.typical_rooms, sizes.big_cells)
        if args.only in (None, "pycrdt"):
            results["pycrdt"] = bench_pycrdt(tmp, sizes, fixture_dir)
    except BaseException:
        log(f"failed; logs in {tmp}")
        args.keep = True
        raise
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{describe_run(args.quick, time.monotonic() - started)}\n")
    print(table(results, sizes))


if __name__ == "__main__":
    main()
