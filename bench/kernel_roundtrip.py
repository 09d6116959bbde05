"""Kernel start and trivial execute round trip (`1+1`) on local Jupyter Servers: the stock one
(Nagle on, no sandbox), with TCP_NODELAY on its kernel websocket, and with TCP_NODELAY plus the
kernel sandbox (kernels.sandbox: bubblewrap, own uid, IPC sockets, limits), as `serve` runs it.

Start: POST /api/kernels -> the kernel answers a first execute (ready for the first cell), for
one notebook whose kernel is started again and again (its home exists; a notebook's very first
kernel also creates IPython's profile in the new home).
Execute: send execute_request -> (execute_reply and iopub idle).

    .venv/bin/python bench/kernel_roundtrip.py [--runs 50] [--starts 10]
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
from kernels.local_server import LocalJupyterServer, Sandbox


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


async def measure_starts(server: LocalJupyterServer, starts: int) -> list[float]:
    timings = []
    async with JupyterClient(server.url, server.token) as client:
        for i in range(starts + 1):
            start = time.perf_counter()
            kernel = await client.start_kernel(path="bench")  # one notebook, its kernel again
            try:
                async with client.channels(kernel["id"]) as channels:
                    events = channels.events()
                    msg_id = await channels.execute("1+1")
                    async for event in events:
                        if isinstance(event, Finished) and event.msg_id == msg_id:
                            break
                    await events.aclose()
                if i:  # the first start also warms the server's imports
                    timings.append((time.perf_counter() - start) * 1000)
            finally:
                await client.shutdown_kernel(kernel["id"])
    return timings


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args()
    configs = (
        ("stock (Nagle on)", False, None),
        ("TCP_NODELAY", True, None),
        ("TCP_NODELAY + sandbox", True, Sandbox()),
    )
    rows = []
    for label, nodelay, sandbox in configs:
        with LocalJupyterServer(nodelay=nodelay, sandbox=sandbox) as server:
            starts = asyncio.run(measure_starts(server, args.starts))
            timings = asyncio.run(measure(server, args.runs))
        rows.append((label, "kernel start", starts))
        rows.append((label, "execute 1+1", timings))
    print(f"{'server':<22} {'what':<13} {'median ms':>10} {'p95 ms':>8} {'min ms':>8} {'max ms':>8}")
    for label, what, values in rows:
        median, high = statistics.median(values), max(values)
        print(f"{label:<22} {what:<13} {median:>10.1f} {p95(values):>8.1f} {min(values):>8.1f} {high:>8.1f}")
    print(f"({args.starts} starts and {args.runs} executes per server)")


if __name__ == "__main__":
    main()
