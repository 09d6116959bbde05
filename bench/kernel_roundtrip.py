"""Trivial execute round trip (`1+1`) over the kernel websocket, with and without TCP_NODELAY.

Starts two local Jupyter Servers (kernels.local_server): the stock one and the one whose kernel
websocket sets TCP_NODELAY, and times send execute_request -> (execute_reply and iopub idle).

    .venv/bin/python bench/kernel_roundtrip.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.execution import Finished
from kernels.jupyter import JupyterClient
from kernels.local_server import LocalJupyterServer


async def measure(server: LocalJupyterServer, runs: int, warmup: int = 5) -> list[float]:
    async with JupyterClient(server.url, server.token) as client:
        kernel = await client.start_kernel()
        try:
            async with client.channels(kernel["id"]) as channels:
                events = channels.events()
                timings = []
                for i in range(warmup + runs):
                    start = time.perf_counter()
                    msg_id = await channels.execute("1+1")
                    async for event in events:
                        if isinstance(event, Finished) and event.msg_id == msg_id:
                            break
                    if i >= warmup:
                        timings.append((time.perf_counter() - start) * 1000)
                await events.aclose()
                return timings
        finally:
            await client.shutdown_kernel(kernel["id"])


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for label, nodelay in (("stock (Nagle on)", False), ("TCP_NODELAY", True)):
        with LocalJupyterServer(nodelay=nodelay) as server:
            timings = asyncio.run(measure(server, args.runs))
        rows.append((label, statistics.median(timings), p95(timings), min(timings), max(timings)))
    print(f"{'server':<18} {'median ms':>10} {'p95 ms':>8} {'min ms':>8} {'max ms':>8}  ({args.runs} runs)")
    for label, median, p95_, low, high in rows:
        print(f"{label:<18} {median:>10.1f} {p95_:>8.1f} {low:>8.1f} {high:>8.1f}")


if __name__ == "__main__":
    main()
