"""What the kernel bridge adds: "run request in -> output visible to another person" against a
direct websocket execute on the same Jupyter Server.

Starts a local Jupyter Server (TCP_NODELAY, as `serve` does), redis and two daphne workers
(tests.support.processes.Stack) whose kernels run on it. A viewer follows the notebook over the y-websocket
protocol, like a browser tab. For each run the clock starts just before the HTTP POST to
`/n/<id>/kernel/run` and stops when the viewer's socket delivers the update that holds the cell's
new output. The cell prints a counter (`print(next(_n))`, as cheap as `print(1)`) so every run's
output differs from the last one's. The direct row times execute_request -> the stream output
arriving on a websocket of our own to a kernel on the same server.

    .venv/bin/python bench/kernel_bridge.py [--runs 30] [--no-sandbox]

`--no-sandbox` runs the kernels unconfined (as before the kernel sandbox), to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pycrdt import Array

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")  # tests.support.processes reads settings

from rt_ws import YClient  # noqa: E402

from kernels.execution import Output  # noqa: E402
from kernels.jupyter import JupyterClient  # noqa: E402
from kernels.local_server import LocalJupyterServer, Sandbox  # noqa: E402
from tests.support.processes import Stack  # noqa: E402

SETUP = "import itertools\n_n = itertools.count(1)"
CODE = "print(next(_n))"


async def direct(server: LocalJupyterServer, runs: int, warmup: int) -> list[float]:
    async with JupyterClient(server.url, server.token) as client:
        kernel = await client.start_kernel()
        try:
            async with client.channels(kernel["id"]) as channels:
                events = channels.events()
                await channels.execute(SETUP)
                timings = []
                for i in range(1, warmup + runs + 1):
                    start = time.monotonic_ns()
                    msg_id = await channels.execute(CODE)
                    # ipykernel may send one print as two stream messages ("7", "\n")
                    text = ""
                    async with asyncio.timeout(30):
                        async for event in events:
                            if isinstance(event, Output) and event.msg_id == msg_id:
                                text += event.msg["content"].get("text", "")
                                if text == f"{i}\n":
                                    break
                    if i > warmup:
                        timings.append((time.monotonic_ns() - start) / 1e6)
                    await asyncio.sleep(0.02)  # let the idle status and reply go by
                await events.aclose()
                return timings
        finally:
            await client.shutdown_kernel(kernel["id"])


class Viewer:
    """A y-websocket client that resolves a future when the bench cell shows `expected`."""

    def __init__(self) -> None:
        self.expected = ""
        self.seen: asyncio.Future[int] | None = None
        self.client = YClient(extra=self._check)

    def _check(self, frame: bytes, t: int) -> None:
        if self.seen is None or self.seen.done():
            return
        for cell in self.client.doc.get("cells", type=Array):
            if cell.get("id") == "bench":
                for output in cell.get("outputs", []):
                    if str(output.get("text", "")) == self.expected:
                        self.seen.set_result(t)
                        return


async def bridge(
    post_port: int, view_port: int, owner: dict, viewer: dict, notebook: str, runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    """(POST -> output seen by the viewer, POST -> 202 answer), in ms."""
    base = f"http://127.0.0.1:{post_port}"
    name, value = owner["cookie"].split("=", 1)
    async with httpx.AsyncClient(base_url=base, cookies={name: value}, timeout=30) as http:
        page = f"/n/{notebook}/"
        assert (await http.get(page)).status_code == 200
        headers = {"X-CSRFToken": http.cookies["csrftoken"], "Origin": base, "Referer": base + page}
        run = page + "kernel/run"
        view = Viewer()
        ws_headers = {"Cookie": viewer["cookie"], "Origin": f"http://127.0.0.1:{view_port}"}
        await view.client.open(f"ws://127.0.0.1:{view_port}/ws/notebooks/{notebook}", ws_headers)
        await view.client.synced
        # a fresh counter in whatever kernel drives the notebook now
        await http.post(run, json={"cell_ids": ["setup"]}, headers=headers)
        await asyncio.sleep(1.0)
        timings, answered = [], []
        for i in range(warmup + runs):  # the setup cell just reset the counter to 1
            loop = asyncio.get_running_loop()
            view.expected, view.seen = f"{i + 1}\n", loop.create_future()
            start = time.monotonic_ns()
            response = await http.post(run, json={"cell_ids": ["bench"]}, headers=headers)
            replied = time.monotonic_ns()
            assert response.status_code == 202, response.text
            seen = await asyncio.wait_for(view.seen, 30)
            if i >= warmup:
                timings.append((seen - start) / 1e6)
                answered.append((replied - start) / 1e6)
            await asyncio.sleep(0.05)  # the run's last edit (execution count) goes by
        await view.client.close()
        return timings, answered


async def bridge_ws(
    port: int, owner: dict, viewer: dict, notebook: str, runs: int, warmup: int
) -> list[float]:
    """The editor's path: a run command on the owner's open websocket (`?ext=1`) -> output
    seen by the viewer's socket on the same worker, in ms."""
    from collab import protocol

    origin = f"http://127.0.0.1:{port}"
    url = f"ws://127.0.0.1:{port}/ws/notebooks/{notebook}"
    runner = YClient()
    await runner.open(url + "?ext=1", {"Cookie": owner["cookie"], "Origin": origin})
    await runner.synced
    view = Viewer()
    await view.client.open(url, {"Cookie": viewer["cookie"], "Origin": origin})
    await view.client.synced
    runner.ws.send(protocol.command(0, "run", {"cell_ids": ["setup"]}))
    await asyncio.sleep(1.0)
    timings = []
    for i in range(warmup + runs):
        view.expected, view.seen = f"{i + 1}\n", asyncio.get_running_loop().create_future()
        start = time.monotonic_ns()
        runner.ws.send(protocol.command(i + 1, "run", {"cell_ids": ["bench"]}))
        seen = await asyncio.wait_for(view.seen, 30)
        if i >= warmup:
            timings.append((seen - start) / 1e6)
        await asyncio.sleep(0.05)
    await view.client.close()
    await runner.close()
    return timings


def notebook_json() -> dict:
    cells = [
        {
            "cell_type": "code",
            "id": cid,
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": source,
        }
        for cid, source in (("setup", SETUP), ("bench", CODE))
    ]
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


def row(label: str, timings: list[float]) -> str:
    p95 = sorted(timings)[max(0, round(0.95 * len(timings)) - 1)]
    median, low, high = statistics.median(timings), min(timings), max(timings)
    return f"| {label} | {median:.1f} | {p95:.1f} | {low:.1f} | {high:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-sandbox", action="store_true", help="kernels unconfined")
    args = parser.parse_args()
    with LocalJupyterServer(sandbox=None if args.no_sandbox else Sandbox()) as server:
        stack = Stack(redis=True, JUPYTER_SERVER_URL=server.url, JUPYTER_SERVER_TOKEN=server.token)
        try:
            a, b = stack.start_worker(), stack.start_worker()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "bench.ipynb"
                path.write_text(json.dumps(notebook_json()))
                owner = stack.user_with_notebook("alice@example.com", title="Bench", ipynb=str(path))
            viewer = stack.user_with_notebook("bob@example.com", title="Other")
            notebook = owner["notebook_id"]
            stack.call("share_with", notebook, "bob@example.com", "viewer")
            direct_ms = asyncio.run(direct(server, args.runs, args.warmup))
            # A takes the kernel lease with its first run; then POST to B is forwarded to A.
            same, same_202 = asyncio.run(bridge(a, a, owner, viewer, notebook, args.runs, args.warmup))
            other, other_202 = asyncio.run(bridge(b, b, owner, viewer, notebook, args.runs, args.warmup))
            over_ws = asyncio.run(bridge_ws(a, owner, viewer, notebook, args.runs, args.warmup))
        finally:
            stack.close()
    kernels = "unconfined kernels" if args.no_sandbox else "sandboxed kernels"
    print(
        f"\n`print(...)` round trip, {kernels}, {args.runs} runs after {args.warmup} warm-up, milliseconds\n"
    )
    print("| path | median | p95 | min | max |")
    print("|---|---:|---:|---:|---:|")
    print(row("direct kernel websocket (execute_request -> stream output)", direct_ms))
    print(
        row(
            "bridge: run command on the editor's websocket -> viewer's socket (what the editor does)", over_ws
        )
    )
    print(row("bridge: POST /kernel/run -> viewer's socket, same worker", same))
    print(row("bridge: POST to worker B -> lease holder A (redis) -> viewer on B", other))
    print(row("(part of the above) POST /kernel/run -> 202, same worker", same_202))
    print(row("(part of the above) POST /kernel/run -> 202, forwarded B -> A", other_202))
    for label, timings in (("the websocket command", over_ws), ("HTTP POST", same)):
        overhead = statistics.median(timings) - statistics.median(direct_ms)
        print(f"\nThrough {label} the bridge adds {overhead:.1f} ms (median) to the direct round trip.")


if __name__ == "__main__":
    main()
