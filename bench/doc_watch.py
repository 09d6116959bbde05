"""What watching a room's document costs: the room's shallow observers (`notebooks.docwatch`)
against one deep observer on the cells, as rooms had before, in the same run.

    .venv/bin/python bench/doc_watch.py            # about a minute on 2 cores

Two measures, each the best of 3 on fresh documents:
- one client update setting `execution_count` on 1,000 cells (20 KB), applied beside 0 and
  20,000 deleted cells (an editor can pile those up: append 1,000 cells, delete them, again);
  applying it with each way of watching, and the room's whole path now (apply, record, and the
  schema check of the 1,000 touched cells, `docschema.put_right`);
- loading a notebook (the room applies the stored document in one update): 1,000 and 10,000
  code cells with 0 or 2 outputs each.
"No observer" is pycrdt alone, the floor. Nothing here starts a server."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pycrdt import Array, Doc, Map, Text

from notebooks import docschema, docwatch


def code_cell(cell_id: str, outputs: int = 0) -> Map:
    out = [Map({"output_type": "stream", "name": "stdout", "text": "1\n"}) for _ in range(outputs)]
    fields = {"cell_type": "code", "source": Text("print(1)"), "metadata": Map(), "outputs": Array(out)}
    return Map({"id": cell_id, "execution_count": None, **fields})


def notebook(deleted: int, live: int, outputs: int = 0) -> bytes:
    doc = Doc()
    cells = docschema.cells(doc)
    for round_ in range(deleted // 1000):
        with doc.transaction():
            for i in range(1000):
                cells.append(code_cell(f"d{round_}-{i}"))
        with doc.transaction():
            del cells[0:1000]
    with doc.transaction():
        for i in range(live):
            cells.append(code_cell(f"c{i}", outputs))
    return doc.get_update()


def counts_on_every_cell(state: bytes, value: int) -> bytes:
    client = Doc()
    client.apply_update(state)
    before = client.get_state()
    with client.transaction():
        for cell in docschema.cells(client):
            cell["execution_count"] = value
    return client.get_update(before)


def deep_observer(doc: Doc):
    """The former room: one deep observer on the cells that reads each event's path and
    target, as its schema and attribution bookkeeping did."""

    def noted(events) -> None:
        for event in events:
            _ = event.path, event.target

    return docschema.cells(doc).observe_deep(noted)


def watched(doc: Doc):
    return docwatch.Watch(doc)


WAYS = {
    "no observer": lambda doc: None,
    "deep observer (before)": deep_observer,
    "shallow watch (now)": watched,
}


def timed_update(way: str, state: bytes, check: bool = False) -> float:
    """`check`: the room's whole path, the schema check of the 1,000 touched cells included."""
    best = float("inf")
    for attempt in range(3):
        doc = Doc()
        kept = WAYS[way](doc)
        doc.apply_update(state)
        update = counts_on_every_cell(state, attempt + 1)
        start = time.perf_counter()
        if isinstance(kept, docwatch.Watch):
            with kept.recording() as touched:
                doc.apply_update(update)
            if check:
                with doc.transaction():
                    docschema.put_right(doc, touched, kept)
        else:
            doc.apply_update(update)
        best = min(best, time.perf_counter() - start)
        if isinstance(kept, docwatch.Watch):
            kept.close()
    return best


def timed_load(way: str, state: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        doc = Doc()
        kept = WAYS[way](doc)
        start = time.perf_counter()
        doc.apply_update(state)
        best = min(best, time.perf_counter() - start)
        if isinstance(kept, docwatch.Watch):
            kept.close()
    return best


def main() -> None:
    print("| one update setting a key on 1,000 cells | " + " | ".join(WAYS) + " | the room's path now |")
    print("|---|" + "---|" * (len(WAYS) + 1))
    for deleted in (0, 20_000):
        state = notebook(deleted, 1000)
        row = [f"{timed_update(way, state) * 1000:.1f} ms" for way in WAYS]
        row.append(f"{timed_update('shallow watch (now)', state, check=True) * 1000:.1f} ms")
        print(f"| beside {deleted:,} deleted cells | " + " | ".join(row) + " |")
    print()
    print("| loading a notebook | " + " | ".join(WAYS) + " |")
    print("|---|" + "---|" * len(WAYS))
    for live, outputs in ((1000, 0), (1000, 2), (10_000, 0), (10_000, 2)):
        state = notebook(0, live, outputs)
        row = [f"{timed_load(way, state) * 1000:.1f} ms" for way in WAYS]
        print(f"| {live:,} cells, {outputs} outputs each | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
