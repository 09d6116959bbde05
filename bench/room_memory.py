"""What a room's memory grows by when an editor sends updates made of one-character items that
cannot merge (each typed at the start of a cell's source: a new item whose right neighbour is the
previous one), against a bare pycrdt Doc applying the same updates.

    .venv/bin/python bench/room_memory.py                  # SQLite in a temporary folder
    .venv/bin/python bench/room_memory.py --updates 60 --chars 2750
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/room_memory.py

Everything runs in this process (no server): the room is built as the tests build it and the
updates go through `Room.receive_update`. Printed at each stage (RSS from /proc, Python's own
allocations from tracemalloc with --trace, which makes it slower): applied, written to the
database, the room closed (and collected).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("SQLITE_PATH", str(Path(tempfile.mkdtemp()) / "db.sqlite3"))
os.environ.setdefault("DISABLE_RATE_LIMITS", "true")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim() -> None:
    """glibc's malloc_trim: the freed memory malloc still holds goes back to the system."""
    ctypes.CDLL(None).malloc_trim(0)


def mb(n: int) -> str:
    return f"{n / 1e6:7.1f} MB"


def attack(state: bytes, count: int, chars: int) -> list[bytes]:
    """`count` updates of `chars` one-character items each, typed at the start of the first
    cell's source, by another client."""
    from pycrdt import Doc

    from notebooks import docschema

    client = Doc()
    client.apply_update(state)
    source = docschema.cells(client)[0]["source"]
    updates = []
    for _ in range(count):
        before = client.get_state()
        with client.transaction():
            for i in range(chars):
                source.insert(0, "abcdefghij"[i % 10])
        updates.append(client.get_update(before))
    return updates


class Stages:
    def __init__(self, trace: bool, trims: bool):
        self.trace, self.trims = trace, trims
        gc.collect()
        trim()  # what building the updates freed is not counted
        self.rss0 = rss()
        self.py0 = tracemalloc.get_traced_memory()[0] if trace else 0

    def show(self, name: str) -> None:
        gc.collect()
        line = f"{name:<34} RSS {mb(rss() - self.rss0)}"
        if self.trims:  # what of it glibc holds freed (it changes what the next stages show)
            trim()
            line += f", after malloc_trim {mb(rss() - self.rss0)}"
        if self.trace:
            line += f"   Python {mb(tracemalloc.get_traced_memory()[0] - self.py0)}"
        print(line, flush=True)


def setup() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection

    connection.close()


async def main(args) -> None:
    from channels.db import database_sync_to_async
    from pycrdt import Doc

    from notebooks import actions, updatelog
    from tests.support.cast import make_user

    user = await database_sync_to_async(make_user)(f"mem{os.getpid()}@example.com", "Mem")
    stages = None
    for round_ in range(args.rounds):
        nb = await database_sync_to_async(actions.create_blank)(user)
        loaded = await database_sync_to_async(updatelog.load)(str(nb.pk))
        updates = attack(loaded.state, args.updates, args.chars)
        total = sum(map(len, updates))
        del loaded
        if stages is None:
            print(f"{len(updates)} updates of {args.chars:,} one-character items, {total:,} bytes in all")
            if args.trace:
                tracemalloc.start(25)
            stages = Stages(args.trace, args.trim)
        if args.rounds > 1:
            print(f"round {round_ + 1}")
        if args.bare:
            doc = Doc()
            doc.apply_update((await database_sync_to_async(updatelog.load)(str(nb.pk))).state)
            for update in updates:
                doc.apply_update(update)
            stages.show("bare pycrdt Doc: applied")
            del doc
            stages.show("bare pycrdt Doc: dropped")
            continue
        await one_room(str(nb.pk), user, updates, stages, args)


async def one_room(notebook_id: str, user, updates: list[bytes], stages: Stages, args) -> None:
    from collab import rooms

    room = await rooms.get_room(notebook_id)
    stages.show("room loaded")
    refused = 0
    for update in updates:
        try:
            room.receive_update(update, None, user.pk)
        except rooms.RoomError as exc:
            refused += 1
            if refused == 1:
                print(f"refused: {exc.code} {exc.reason}")
        await asyncio.sleep(0)
    stages.show(f"applied ({refused} refused)")
    await room.flushed()
    await asyncio.sleep(0.5)  # the relay, and a compaction if one started
    while room._compacting:
        await asyncio.sleep(0.05)
    stages.show("written")
    if args.trace:
        snapshot = tracemalloc.take_snapshot()
        for stat in snapshot.statistics("traceback")[:4]:
            print(f"  {stat.size / 1e6:.1f} MB in {stat.count} blocks")
            for line in stat.traceback.format()[-8:]:
                print("   ", line)
    await room.close()
    import weakref

    gone = weakref.ref(room)
    doc_gone = weakref.ref(room.doc)
    del room
    await asyncio.sleep(0.1)
    print(f"freed without the cycle collector: room {gone() is None}, doc {doc_gone() is None}")
    stages.show("room closed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--chars", type=int, default=2750)
    parser.add_argument("--trace", action="store_true", help="tracemalloc as well (slower)")
    parser.add_argument("--rounds", type=int, default=1, help="notebooks attacked one after the other")
    parser.add_argument("--trim", action="store_true", help="malloc_trim after each stage as well")
    parser.add_argument("--bare", action="store_true", help="a bare pycrdt Doc instead of a room")
    arguments = parser.parse_args()
    setup()
    asyncio.run(main(arguments))
