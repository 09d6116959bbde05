"""The scenarios of bench/realtime.py. The same code runs against either server (a `Target`);
each scenario is bounded in time and returns plain numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from jupyter_ydoc import YNotebook
from rt_servers import Target
from rt_ws import MARKER, Observer, YClient, marker

CONNECT_CONCURRENCY = 20


@dataclass
class Sizes:
    observers: int = 200
    fanout_seconds: float = 12.0
    settle_seconds: float = 1.5  # after connecting, before sending; after sending, before counting
    blast_seconds: float = 10.0
    blast_clients_per_worker: int = 4
    blast_window: int = 64  # unacknowledged updates a blasting client may have in flight
    drain_timeout: float = 45.0
    typical_rooms: int = 20
    big_cells: int = 2000
    second_joins: int = 5
    idle_timeout: float = 60.0  # between scenarios, for a server to finish its backlog
    storage_edits: int = 2000
    typing_rate: float = 200.0  # one-character updates per second in the storage scenario


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


class CPU:
    """CPU used by some processes between start() and stop(), in % of one core, and what every
    other process on the machine used meanwhile (the load generator shares the cores, and so
    would anything else running)."""

    def __init__(self, pids: list[int]):
        self.procs = [psutil.Process(pid) for pid in pids]

    def _sample(self) -> tuple[float, list[float], float]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return time.monotonic(), [sum(p.cpu_times()[:2]) for p in self.procs], busy

    def start(self) -> None:
        self.begin = self._sample()

    def stop(self) -> tuple[list[float], float]:
        """(% per process, % used by all other processes)."""
        (t0, ours0, busy0), (t1, ours1, busy1) = self.begin, self._sample()
        ours = [100 * (b - a) / (t1 - t0) for a, b in zip(ours0, ours1, strict=True)]
        return ours, max(0.0, 100 * (busy1 - busy0) / (t1 - t0) - sum(ours))


async def wait_idle(target: Target, helper_pids: list[int], timeout: float) -> float:
    """Wait until the server processes use under 10% of a core over half a second (a server may
    still be working off a backlog after a scenario); return how long that took."""
    cpu = CPU([*target.pids, *helper_pids])
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        cpu.start()
        await asyncio.sleep(0.5)
        if sum(cpu.stop()[0]) < 10:
            break
    return max(0.0, time.monotonic() - start - 0.5)


async def open_many(factories) -> list:
    opened = []
    for start in range(0, len(factories), CONNECT_CONCURRENCY):
        opened += await asyncio.gather(*(f() for f in factories[start : start + CONNECT_CONCURRENCY]))
    return opened


async def close_all(clients) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def joined(target: Target, worker: int, room: str, **kw) -> YClient:
    client = await YClient(**kw).open(target.url(worker, room), target.headers(worker))
    try:
        await asyncio.wait_for(asyncio.shield(client.synced), 30)
    except TimeoutError:
        ws = client.ws
        state = f"closed {ws.close_code} {ws.close_reason!r}" if ws.closed.done() else "open"
        raise RuntimeError(
            f"no sync from {target.name} worker {worker} for {room} in 30 s (socket {state})"
        ) from None
    return client


async def seed(target: Target, states: dict[str, bytes]) -> None:
    """Give the comparison server the app's documents: a client sends each whole state once and
    stays until the store holds it (leaving earlier could cancel the write with the room)."""
    for room, state in states.items():
        client = await joined(target, 0, room)
        client.send_update(state)
        deadline = time.monotonic() + 30
        while target.persisted(room) < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await client.close()
    await asyncio.sleep(0.5)


async def warm_up(target: Target) -> None:
    """Load the code paths of each worker (imports, first DB connection) before timing anything."""
    for worker in range(len(target.ports)):
        client = await joined(target, worker, "warm")
        client.send_update(client.append_to_first_cell("warm "))
        await asyncio.sleep(0.3)
        await client.close()


async def timed_join(target: Target, worker: int, room: str, cells: int) -> tuple[float, float, YClient]:
    """(ms until the server's step2 arrived, ms until the client holds the whole notebook, client)."""
    start = time.monotonic_ns()
    client = await joined(target, worker, room)
    step2 = await client.synced
    got = len(YNotebook(client.doc).get()["cells"])
    done = time.monotonic_ns()
    if got != cells:
        raise RuntimeError(f"joined {room} on {target.name} and got {got} cells, not {cells}")
    return (step2 - start) / 1e6, (done - start) / 1e6, client


async def memory_and_join(target: Target, sizes: Sizes) -> dict:
    """RSS of worker 0 before/after loading K typical rooms and the big notebook; join times."""
    worker = psutil.Process(target.pids[0])
    await asyncio.sleep(1)
    rss0 = worker.memory_info().rss
    rooms = [f"typical{i:02d}" for i in range(sizes.typical_rooms)]
    clients = await open_many([lambda r=r: joined(target, 0, r) for r in rooms])
    await asyncio.sleep(1)
    rss1 = worker.memory_info().rss
    first_step2, first, big = await timed_join(target, 0, "big", sizes.big_cells)
    clients.append(big)
    await asyncio.sleep(1)
    rss2 = worker.memory_info().rss
    seconds = []
    for _ in range(sizes.second_joins):
        step2, total, client = await timed_join(target, 0, "big", sizes.big_cells)
        seconds.append((step2, total))
        await client.close()
    other = None
    if len(target.ports) > 1:  # the room is loaded on worker 0, not on worker 1
        _, other, client = await timed_join(target, 1, "big", sizes.big_cells)
        clients.append(client)
    await close_all(clients)
    return {
        "room_kib": (rss1 - rss0) / len(rooms) / 1024,
        "big_mib": (rss2 - rss1) / 2**20,
        "rss_big_mib": rss2 / 2**20,
        "rss0_mib": rss0 / 2**20,
        "join_first_ms": first,
        "join_first_step2_ms": first_step2,
        "join_first_other_worker_ms": other,
        "join_second_ms": statistics.median(t for _, t in seconds),
        "join_second_step2_ms": statistics.median(s for s, _ in seconds),
    }


async def fanout(
    target: Target, room: str, tag: str, writers: int, rate: float, sizes: Sizes, helper_pids: list[int]
) -> dict:
    """`writers` clients each append a timed marker `rate` times a second to the first cell;
    `sizes.observers` readers, spread over the workers, time each marker's arrival."""
    n = len(target.ports)
    latencies: list[float] = []
    observers = await open_many(
        [
            lambda i=i: Observer(tag.encode(), latencies).open(target.url(i % n, room), target.headers(i % n))
            for i in range(sizes.observers)
        ]
    )
    senders = [await joined(target, i % n, room) for i in range(writers)]
    await asyncio.sleep(sizes.settle_seconds)
    cpu = CPU([*target.pids, *helper_pids, os.getpid()])
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.1
    end = begin + sizes.fanout_seconds
    sent = [0] * writers

    async def write(w: int, client: YClient) -> None:
        at = begin + w / (rate * writers)  # writers take turns rather than all at once
        while at < end:
            await asyncio.sleep(max(0.0, at - loop.time()))
            client.send_update(client.append_to_first_cell(marker(tag, w, sent[w])))
            sent[w] += 1
            at += 1 / rate

    cpu.start()
    await asyncio.gather(*(write(w, c) for w, c in enumerate(senders)))
    usage, others = cpu.stop()
    await asyncio.sleep(sizes.settle_seconds + 0.5)  # stragglers
    received = len(latencies)
    await close_all([*observers, *senders])
    expected = sum(sent) * sizes.observers
    return {
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=float("nan")),
        "sent": sum(sent),
        "delivered": received / expected if expected else 0.0,
        "cpu_server": sum(usage[: n + len(helper_pids)]),
        "cpu_loadgen": usage[-1],
        "cpu_others": others,
    }


async def blast(target: Target, room: str, sizes: Sizes, helper_pids: list[int]) -> dict:
    """Clients append as fast as the server takes them (each keeps at most `blast_window`
    updates not yet echoed back), then we watch the database until it holds all of them.
    The app echoes an update only after it is committed, pycrdt-websocket before it is stored."""
    n = len(target.ports)
    count = n * sizes.blast_clients_per_worker
    acked = [0] * count
    wake = [asyncio.Event() for _ in range(count)]

    def on_frame(i: int):
        mine = str(i).encode()

        def seen(frame: bytes, t: int) -> None:
            for tag, writer, seq, _ in MARKER.findall(frame):
                if tag == b"b" and writer == mine:
                    acked[i] = max(acked[i], int(seq) + 1)
                    wake[i].set()

        return seen

    clients = [await joined(target, i % n, room, extra=on_frame(i), follow=False) for i in range(count)]
    await asyncio.sleep(1)
    base = target.persisted(room)
    sent = [0] * count
    cpu = CPU([*target.pids, *helper_pids, os.getpid()])
    loop = asyncio.get_running_loop()
    cpu.start()
    start = loop.time()
    end = start + sizes.blast_seconds

    async def run(i: int, client: YClient) -> None:
        while loop.time() < end:
            while sent[i] - acked[i] < sizes.blast_window:
                client.send_update(client.append_to_first_cell(marker("b", i, sent[i])))
                sent[i] += 1
            wake[i].clear()
            try:
                await asyncio.wait_for(wake[i].wait(), max(0.001, end - loop.time()))
            except TimeoutError:
                break

    await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    blast_end = loop.time()
    echoed = sum(acked)
    usage, others = cpu.stop()
    total = sum(sent)
    at_end = target.persisted(room) - base
    persisted = at_end
    while persisted < total and loop.time() - blast_end < sizes.drain_timeout:
        await asyncio.sleep(0.05)
        persisted = target.persisted(room) - base
    done = loop.time()
    await close_all(clients)
    return {
        "sent": total,
        "echoed_per_s": echoed / (blast_end - start),
        "cpu_server": sum(usage[:-1]),
        "cpu_others": others,
        "persisted": persisted,
        "persisted_at_end": at_end,
        "persisted_per_s_per_worker": persisted / (done - start) / n,
        "drain_s": done - blast_end,
        "drained": persisted >= total,
    }


def read_states(fixture_dir: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (fixture_dir / f"{name}.bin").read_bytes() for name in names}


async def storage(target: Target, room: str, sizes: Sizes, helper_pids: list[int]) -> dict:
    """One client types `sizes.storage_edits` characters into the first cell of a blank
    notebook, one update each, as a typist's editor sends them. Once the store holds them all
    (or `drain_timeout` has passed) and the server is idle (background compaction done), the
    bytes of document data kept for the room, next to the size of the document itself."""
    client = await joined(target, 0, room)
    base = target.persisted(room)
    loop = asyncio.get_running_loop()
    at = loop.time()
    for _ in range(sizes.storage_edits):
        at += 1 / sizes.typing_rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        client.send_update(client.append_to_first_cell("x"))
    deadline = time.monotonic() + sizes.drain_timeout
    while target.persisted(room) - base < sizes.storage_edits and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stored = target.persisted(room) - base
    await wait_idle(target, helper_pids, sizes.idle_timeout)
    await asyncio.sleep(1.0)
    result = {
        "edits": sizes.storage_edits,
        "stored_updates": stored,
        "stored_bytes": target.stored_bytes(room),
        "doc_bytes": len(client.doc.get_update()),
        "json_bytes": len(json.dumps(YNotebook(client.doc).get(), ensure_ascii=False).encode()),
    }
    await client.close()
    return result
