"""The server's list of cell ids (`docschema.CellIds`), kept from change events, against the
document itself after random structural changes: inserts, deletes, moves, renames, repairs."""

from __future__ import annotations

import random

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


def watched() -> tuple[Doc, docschema.CellIndex]:
    doc = Doc()
    cells = docschema.cells(doc)
    index = docschema.CellIndex()
    doc._watched, doc._subscription = cells, cells.observe_deep(index.note)
    for i in range(5):
        cells.append(cell(f"c{i}"))
    return doc, index


def repaired(doc: Doc, index: docschema.CellIndex, touched: docschema.Touched) -> list[str]:
    with doc.transaction():
        return docschema.put_right(doc, touched, index)


@pytest.mark.parametrize("seed", range(20))
def test_the_kept_ids_follow_every_structural_change(seed):
    rng = random.Random(seed)
    doc, ids = watched()
    cells = docschema.cells(doc)
    assert ids.known(cells).ids == actual(doc)
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
            repaired(doc, ids, touched)
            readable = [i for i in actual(doc) if i is not None]
            assert len(set(readable)) == len(readable)
        assert ids.ids == actual(doc), f"step {step}"


@pytest.fixture
def reads_by_position(monkeypatch) -> list[int]:
    """Every read of an Array item by its position (it walks the items before it)."""
    reads: list[int] = []
    original = Array.__getitem__

    def counting(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(Array, "__getitem__", counting)
    return reads


def test_repeated_ids_are_found_without_reading_cells_by_position(reads_by_position):
    """Reading the i-th cell walks the cells before it: a repair that read every cell of a
    10,000-cell notebook took seconds for each inserted cell."""
    doc, index = watched()
    cells = docschema.cells(doc)
    with doc.transaction():
        for i in range(10_000):
            cells.append(cell(f"n{i}"))
    for _ in range(20):
        cells.append(cell("n5"))
        reads_by_position.clear()
        repaired(doc, index, docschema.Touched(cells={len(cells) - 1}))
        assert reads_by_position == []
    assert len(set(index.ids)) == len(index.ids) == len(cells)
    assert index.ids == actual(doc)


def test_one_update_inserting_many_cells_is_put_right_without_reading_cells_by_position(reads_by_position):
    """One update of 1,000 cells (170 KB) appended to a 10,000-cell notebook held the worker
    (every room on it) for about two seconds when each was read by its position; 6,000 for
    seven. (pycrdt's events for the repair's own writes still walk the cells: about 0.5 s here.)"""
    doc, index = watched()
    cells = docschema.cells(doc)
    with doc.transaction():
        for i in range(10_000):
            cells.append(cell(f"n{i}"))
    with doc.transaction():
        for i in range(1_000):
            cells.append(cell(f"m{i % 500}"))  # half repeat an id of the same update
            cells.append("not a cell")
    touched = docschema.Touched(cells=set(range(10_005, 12_005)))
    reads_by_position.clear()
    found = repaired(doc, index, touched)
    assert reads_by_position == []
    assert len(found) == 1_000 + 500 + 1_000  # no execution count, a repeated id, not a map
    assert len(cells) == 11_005
    assert index.ids == actual(doc)
    assert len(set(index.ids)) == len(index.ids)
