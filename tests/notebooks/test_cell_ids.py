"""The server's list of cell ids (`docschema.CellIds`), kept from change events, against the
document itself after random structural changes: inserts, deletes, moves, renames, repairs."""

from __future__ import annotations

import random
import time

import pytest
from pycrdt import Array, Doc, Map, Text

from notebooks import docschema


def cell(cell_id) -> Map:
    fields = {"cell_type": "code", "source": Text(""), "metadata": Map(), "outputs": Array()}
    return Map({"id": cell_id, **fields})


def actual(doc: Doc) -> list:
    found = [c.get("id") if isinstance(c, Map) else None for c in docschema.cells(doc)]
    return [i if isinstance(i, str) else None for i in found]


def id_at(cells: Array, index: int):
    item = cells[index]
    return item.get("id") if isinstance(item, Map) else "x"


def watched() -> tuple[Doc, docschema.CellIds]:
    doc = Doc()
    cells = docschema.cells(doc)
    for i in range(5):
        cells.append(cell(f"c{i}"))
    ids = docschema.CellIds()
    doc._subscription = cells.observe_deep(ids.note)
    return doc, ids


@pytest.mark.parametrize("seed", range(20))
def test_the_kept_ids_follow_every_structural_change(seed):
    rng = random.Random(seed)
    doc, ids = watched()
    cells = docschema.cells(doc)
    assert ids.of(cells) == actual(doc)
    for step in range(60):
        with doc.transaction():
            for _ in range(rng.randint(1, 3)):
                n = len(cells)
                kind = rng.choice(["insert", "delete", "move", "rename", "odd", "twin"])
                if kind == "insert" or n == 0:
                    cells.insert(rng.randint(0, n), cell(f"s{seed}-{step}-{rng.random()}"))
                elif kind == "delete":
                    i = rng.randrange(n)
                    del cells[i : min(n, i + rng.randint(1, 3))]
                elif kind == "move":  # as the editor moves a cell: a fresh copy, same id
                    i, j = rng.randrange(n), rng.randrange(n)
                    moved = id_at(cells, i)
                    del cells[i]
                    cells.insert(j, cell(moved))
                elif kind == "rename":
                    if isinstance(target := cells[rng.randrange(n)], Map):
                        target["id"] = f"r{step}-{rng.random()}"
                elif kind == "odd":
                    cells.insert(rng.randint(0, n), rng.choice(["not a cell", 7]))
                else:
                    cells.insert(rng.randint(0, n), cell(id_at(cells, rng.randrange(n))))
        if step % 7 == 0:  # the server's repair, with the kept list
            touched = docschema.Touched(cells=set(range(len(cells))))
            with doc.transaction():
                docschema.put_right(doc, touched, ids)
            readable = [i for i in actual(doc) if i is not None]
            assert len(set(readable)) == len(readable)
        assert ids.ids == actual(doc), f"step {step}"


def test_repeated_ids_are_found_in_time_linear_in_the_cells():
    """Reading the i-th cell walks the cells before it: a repair that read every cell of a
    10,000-cell notebook took seconds for each inserted cell."""
    doc, ids = watched()
    cells = docschema.cells(doc)
    with doc.transaction():
        for i in range(10_000):
            cells.append(cell(f"n{i}"))
    ids.of(cells)
    started = time.perf_counter()
    for _ in range(20):
        cells.append(cell("n5"))
        touched = docschema.Touched(cells={len(cells) - 1})
        with doc.transaction():
            docschema.put_right(doc, touched, ids)
    spent = time.perf_counter() - started
    assert len(set(ids.ids)) == len(cells)
    assert spent < 1.0, f"{spent:.2f} s for 20 inserted cells"


def test_one_update_inserting_many_cells_is_put_right_in_time_linear_in_the_cells():
    """Every inserted cell is read by its index, and reading the i-th cell walks the cells
    before it: one update of 1,000 cells (170 KB) appended to a 10,000-cell notebook held the
    worker (every room on it) for about a second, 6,000 cells for seven."""
    doc, ids = watched()
    cells = docschema.cells(doc)
    with doc.transaction():
        for i in range(10_000):
            cells.append(cell(f"n{i}"))
    ids.of(cells)
    with doc.transaction():
        for i in range(1_000):
            cells.append(cell(f"m{i}"))
    touched = docschema.Touched(cells=set(range(10_005, 11_005)))
    started = time.perf_counter()
    with doc.transaction():
        docschema.put_right(doc, touched, ids)
    spent = time.perf_counter() - started
    assert spent < 0.25, f"{spent:.2f} s to put right one update of 1,000 cells"
