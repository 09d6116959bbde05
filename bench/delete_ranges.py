"""How long one client update deleting many separate ranges holds a worker's event loop: a real
daphne worker (SQLite, no Redis), an editor pastes `--chars` characters, then sends one update
deleting every other one of them (`--ranges` ranges, split out of the paste) while /healthz is
asked every 10 ms. Printed: the update's size, how the worker answered and after how long, and
the slowest /healthz answer meanwhile.

    .venv/bin/python bench/delete_ranges.py                      # 100,000 ranges
    .venv/bin/python bench/delete_ranges.py --ranges 20000
    .venv/bin/python bench/delete_ranges.py --ranges 20000 --limit 1000000   # what it costs let in
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.request
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from collab import protocol  # noqa: E402
from tests.support.processes import Stack  # noqa: E402
from tests.support.yclient import open_client  # noqa: E402


def every_other(client_id: int, start: int, count: int) -> bytes:
    out = bytearray(b"\x00\x01") + protocol.write_var_uint(client_id) + protocol.write_var_uint(count)
    for i in range(count):
        out += protocol.write_var_uint(start + 2 * i) + b"\x01"
    return bytes(out)


def healthz(port: int) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
        answer.read()
    return time.perf_counter() - started


async def main(args) -> None:
    env = {"COLLAB_MAX_DOCUMENT_PIECES": "5000000"}
    if args.limit:
        env["COLLAB_MAX_DELETE_RANGES_PER_UPDATE"] = str(args.limit)
    stack = Stack(redis=False, **env)
    try:
        alice = stack.user_with_notebook("ranges@example.com")
        port = stack.start_worker()
        client = await open_client(port, alice["notebook_id"], alice["cookie"])
        client.text().insert(0, "x" * args.chars)
        await client.flush()
        other = await open_client(port, alice["notebook_id"], alice["cookie"])
        while len(other.source()) < args.chars:
            await asyncio.sleep(0.05)
        start = protocol.parse_state_vector(client.doc.get_state())[client.doc.client_id] - args.chars
        update = every_other(client.doc.client_id, start, args.ranges)
        for _ in range(5):  # warm
            await asyncio.to_thread(healthz, port)
        idle = max([await asyncio.to_thread(healthz, port) for _ in range(20)])
        slowest = [0.0]
        done = asyncio.Event()

        async def probe():
            while not done.is_set():
                slowest[0] = max(slowest[0], await asyncio.to_thread(healthz, port))
                await asyncio.sleep(0.01)

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.05)
        sent = time.perf_counter()
        before = len(other.source())
        await client.ws.send(protocol.sync_update(update))
        while client.ws.close_code is None and len(other.source()) == before:
            await asyncio.sleep(0.002)
        answered = time.perf_counter() - sent
        code = client.ws.close_code
        outcome = f"closed {code}: {client.ws.close_reason}" if code else "taken"
        await asyncio.sleep(0.3)  # the probe's next answers after the loop is free again
        done.set()
        await prober
        print(
            f"{args.ranges:,} ranges, {len(update) / 1e6:.2f} MB: {outcome}; "
            f"answered after {answered:.3f} s; "
            f"/healthz slowest {slowest[0]:.3f} s during it (idle: {idle:.3f} s)"
        )
        await other.ws.close()
    finally:
        stack.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranges", type=int, default=100_000)
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--limit", type=int, default=0, help="COLLAB_MAX_DELETE_RANGES_PER_UPDATE")
    asyncio.run(main(parser.parse_args()))
