"""How many updates per second reach the database when clients send as fast as they can.

    .venv/bin/python bench/persist_burst.py                 # 1 worker (in-memory layer) and 2 workers + redis
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/persist_burst.py

Clients do not wait for echoes (realtime.py's "blast" does, so it also measures the echo
path): this is the write path alone. Time runs from the first send until the notebook's
last sequence number in the database reaches the number of updates sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from tests.support.processes import Stack
from tests.support.yclient import open_client


def stored_seq(stack: Stack) -> int:
    query = "select seq from notebooks_notebook"
    if "SQLITE_PATH" in stack.env:
        with sqlite3.connect(stack.env["SQLITE_PATH"]) as conn:
            return conn.execute(query).fetchone()[0]
    import psycopg

    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        return conn.execute(query).fetchone()[0]


async def burst(workers: int, updates: int, clients: int) -> str:
    stack = Stack(redis=workers > 1)
    try:
        owner = stack.user_with_notebook("burst@example.com")
        ports = [stack.start_worker() for _ in range(workers)]
        conns = [
            await open_client(ports[i % workers], owner["notebook_id"], owner["cookie"])
            for i in range(clients)
        ]
        started = time.monotonic()
        for _ in range(updates // clients):
            for k, client in enumerate(conns):
                client.text().insert(len(client.text()), str(k))
                await client.flush()
        sent = time.monotonic() - started
        deadline = started + 60
        while stored_seq(stack) < updates and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        total = time.monotonic() - started
        stored = stored_seq(stack)
        return (
            f"| {workers} | {clients} | {updates} | {sent:.2f} s | {total:.2f} s | "
            f"{stored / total:,.0f} | {stored / total / workers:,.0f} |"
        )
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"{database}, {os.cpu_count()} cores\n")
    print("| workers | clients | updates | all sent | all in the database | updates/s | per worker |")
    print("|---|---|---|---|---|---|---|")
    for workers in (1, 2):
        print(asyncio.run(burst(workers, args.updates, args.clients)), flush=True)


if __name__ == "__main__":
    main()
