"""The notebook document schema (jupyter_ydoc's YNotebook): the one place that knows it.

Root `cells` Array of Maps (`id`, `cell_type`, `source` Text, `metadata` Map, `outputs` Array
(code cells), `execution_count`, `attachments`; the bridge adds `execution_state`: "idle",
"queued" or "running"); root `meta` Map (`nbformat`, `nbformat_minor`, `metadata`); root
`state` Map. The engine (`collab.rooms`), the kernel bridge (`kernels.outputs`,
`kernels.bridge`), import/export (`notebooks.ydoc`) and the update log read and write the
document through the names and helpers here.

Kept by the server:

Yjs takes any update that decodes, so an editor's client (buggy, or written to do harm) can put
into the shared document what no notebook holds: a cell that is not a map, an unknown cell type,
a source that is not text, an output that is not a map with a known `output_type`, a `meta`
without `nbformat`. Every other editor would then fail to show the notebook, and downloading it
would fail.

The room records what each client update changed (`Touched`, fed from its deep observers while
the update is applied; typing only changes Text and records nothing) and then calls
`put_right` in a server transaction: it removes cells and outputs that cannot be read and fills
in or resets fields of the wrong type. That correction is queued right behind the update, so
both are written in the same batch and other clients receive them merged into one update: they
never see the broken state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Array, ArrayEvent, Doc, Map, MapEvent, Text

from notebooks.nbio import CELL_TYPES

OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "error"})
NBFORMAT = 4.0
NBFORMAT_MINOR = 5.0

# The roots of the document.
CELLS, META, STATE = "cells", "meta", "state"
# A cell's keys.
ID, CELL_TYPE, SOURCE, METADATA, OUTPUTS = "id", "cell_type", "source", "metadata", "outputs"
EXECUTION_COUNT, EXECUTION_STATE, ATTACHMENTS = "execution_count", "execution_state", "attachments"
EXECUTION_STATES = ("idle", "queued", "running")


def cells(doc: Doc) -> Array:
    return doc.get(CELLS, type=Array)


def meta(doc: Doc) -> Map:
    return doc.get(META, type=Map)


def state(doc: Doc) -> Map:
    return doc.get(STATE, type=Map)


def content(doc: Doc) -> dict:
    """The whole document as plain data (to compare two documents)."""
    return {CELLS: cells(doc).to_py(), META: meta(doc).to_py(), STATE: state(doc).to_py()}


def cell_source(doc: Doc, cell_id: str) -> str | None:
    """The source of the cell with this id, or None if there is no such code cell."""
    for cell in cells(doc):
        if isinstance(cell, Map) and cell.get(ID) == cell_id:
            if cell.get(CELL_TYPE) != "code":
                return None
            return str(cell.get(SOURCE, ""))
    return None


def execution_states(doc: Doc) -> list[tuple[str, str]]:
    """(cell id, `execution_state`) of the code cells that have one."""
    return [
        (str(c.get(ID)), str(c.get(EXECUTION_STATE)))
        for c in cells(doc)
        if isinstance(c, Map) and c.get(EXECUTION_STATE) is not None
    ]


@dataclass
class Touched:
    """Where an update changed the document's structure (indexes after the update)."""

    cells: set[int] = field(default_factory=set)  # inserted cells, or cells whose keys changed
    outputs: set[int] = field(default_factory=set)  # cells whose outputs changed
    meta: bool = False

    def __bool__(self) -> bool:
        return bool(self.cells or self.outputs or self.meta)

    def note_cells_event(self, event: Any) -> None:
        path = event.path
        if not path:
            if isinstance(event, ArrayEvent):
                index = 0
                for change in event.delta:
                    index += change.get("retain", 0)
                    inserted = len(change.get("insert", ()) or ())
                    self.cells.update(range(index, index + inserted))
                    index += inserted
        elif len(path) == 1:
            if isinstance(event, MapEvent):
                self.cells.add(path[0])
        elif path[1] == "outputs" and isinstance(event, ArrayEvent | MapEvent):
            self.outputs.add(path[0])


class CellIndex:
    """Every cell in document order (its Map; None for an item that is not one) and its id (None
    unless a string), kept from the change events of a deep observer of the cells (`note`, called
    for every transaction) that watched from the document's first one: reading a pycrdt Array's
    i-th item walks the items before it, so reading the cells one by one costs seconds at 10,000
    cells. `changed`: a cell was inserted, deleted or renamed since the holder last cleared it."""

    def __init__(self, known: bool = True) -> None:
        self.cells: list[Map | None] | None = [] if known else None
        self.ids: list[str | None] = []
        self.changed = False

    def known(self, array: Array) -> CellIndex:
        """The index, read from `array` item by item if events were missed (after a failure)."""
        if self.cells is None:
            self.cells = [c if isinstance(c, Map) else None for c in array]
            self.ids = [_id_of(c.get(ID)) if c is not None else None for c in self.cells]
        return self

    def cell(self, index: int, array: Array) -> Any:
        cells = self.cells
        return cells[index] if cells is not None and index < len(cells) else array[index]

    def note(self, events: list) -> None:
        if self.cells is None:
            return
        try:
            self._note(events)
        except Exception:  # read afresh when next needed rather than keep a wrong index
            self.cells = None
            raise

    def _note(self, events: list) -> None:
        cells, ids = self.cells, self.ids
        renamed = []
        for event in events:  # the cheap checks first: a deep event's path walks its parents
            if isinstance(event, ArrayEvent) and not event.path:
                index = 0
                for change in event.delta:
                    if "retain" in change:
                        index += change["retain"]
                    elif "insert" in change:
                        added = [c if isinstance(c, Map) else None for c in change["insert"]]
                        cells[index:index] = added
                        ids[index:index] = [_id_of(c.get(ID)) if c is not None else None for c in added]
                        index += len(added)
                    elif "delete" in change:
                        del cells[index : index + change["delete"]]
                        del ids[index : index + change["delete"]]
                self.changed = True
            elif isinstance(event, MapEvent) and ID in event.keys and len(event.path) == 1:
                renamed.append(event)
        for event in renamed:  # indexes after the whole transaction
            ids[event.path[0]] = _id_of(event.target.get(ID))
            self.changed = True


def _id_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def put_right(doc: Doc, touched: Touched, index: CellIndex | None = None) -> list[str]:
    """Repair the places `touched` names; return what was wrong, for the log. Call it inside a
    transaction: it writes only where something is wrong. `index`: the cells as the update left
    them, kept by the caller's observer, which also takes this repair's own changes (read
    afresh otherwise). Reads no cell by its position."""
    found: list[str] = []
    array = cells(doc)
    index = (index or CellIndex(known=False)).known(array)
    # The index changes only when this transaction ends: it is the cells as the update left them.
    cells_now, count = index.cells, len(index.cells)
    unreadable = []
    for i in sorted(touched.cells | touched.outputs):
        if i >= count:
            continue
        cell = cells_now[i]
        if cell is None:
            unreadable.append(i)
            found.append(f"cell {i} is not a map: removed")
            continue
        if i in touched.cells:
            found += _put_cell_right(cell, i)
        outputs = cell.get("outputs")
        if isinstance(outputs, Array) and cell.get("cell_type") == "code":
            found += _put_outputs_right(outputs, i)
    if touched.cells:
        found += _give_unique_ids(cells_now, index.ids, touched.cells)
    for start, stop in reversed(_runs(unreadable)):
        del array[start:stop]
    if touched.meta:
        found += _put_meta_right(meta(doc))
    return found


def unique_ids(doc: Doc, index: CellIndex) -> list[str]:
    """Give every cell whose id an earlier cell has an id of its own (changes that were each
    right alone but repeat an id together: one cell moved by two people on two workers)."""
    index.known(cells(doc))
    seen, found = set(), []
    for i, cell_id in enumerate(index.ids):
        if cell_id is not None and cell_id in seen:
            found.append(f"cell {i} has the id of an earlier cell: given one of its own")
            index.cells[i][ID] = new_cell_id()
        seen.add(cell_id)
    return found


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted indexes as (start, stop) ranges of consecutive ones: one deletion per range."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _give_unique_ids(cells_now: list, ids: list, touched: set[int]) -> list[str]:
    """Cells are found by their id (runs, deletes, presence, the editor's views): a touched cell
    whose id another cell has gets a new one; an untouched cell, or the first of the touched
    ones, keeps it."""
    touched = {i for i in touched if i < len(cells_now)}
    seen = {cell_id for i, cell_id in enumerate(ids) if i not in touched}
    found = []
    for i in sorted(touched):
        cell = cells_now[i]
        if cell is None:
            continue
        cell_id = _id_of(cell.get(ID))
        if cell_id in seen:
            found.append(f"cell {i} has the id of another cell: given one of its own")
            cell[ID] = cell_id = new_cell_id()
        seen.add(cell_id)
    return found


def new_cell_id() -> str:
    return uuid.uuid4().hex[:16]


def _is_count(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value >= 0 and float(value).is_integer()


def _put_cell_right(cell: Map, index: int) -> list[str]:
    found = []
    kind = cell.get("cell_type")
    if kind not in CELL_TYPES:
        found.append(f"cell {index} has cell type {kind!r}: made raw")
        cell["cell_type"] = kind = "raw"
    if not isinstance(cell.get("source"), Text | str):
        found.append(f"cell {index} has no source text: emptied")
        cell["source"] = Text()
    if not isinstance(cell.get("id"), str) or not cell.get("id"):
        found.append(f"cell {index} has no id: given one")
        cell["id"] = new_cell_id()
    if not isinstance(cell.get("metadata"), Map | dict):
        found.append(f"cell {index} has no metadata map: emptied")
        cell["metadata"] = Map()
    if kind == "code":
        if not isinstance(cell.get("outputs"), Array):
            found.append(f"code cell {index} has no outputs array: emptied")
            cell["outputs"] = Array()
        count = cell.get("execution_count")
        if "execution_count" not in cell or not _is_count(count):
            found.append(f"code cell {index} has execution count {count!r}: cleared")
            cell["execution_count"] = None
        if "attachments" in cell:
            found.append(f"code cell {index} has attachments: removed")
            del cell["attachments"]
    else:
        for key in ("outputs", "execution_count"):
            if key in cell:
                found.append(f"{kind} cell {index} has {key}: removed")
                del cell[key]
        if "attachments" in cell and not isinstance(cell.get("attachments"), Map | dict):
            found.append(f"{kind} cell {index} has attachments that are not a map: removed")
            del cell["attachments"]
    return found


def _put_outputs_right(outputs: Array, index: int) -> list[str]:
    bad = [
        i
        for i, output in enumerate(outputs)
        if not isinstance(output, Map) or output.get("output_type") not in OUTPUT_TYPES
    ]
    for i in reversed(bad):
        del outputs[i]
    return [f"cell {index} had {len(bad)} unreadable output(s): removed"] if bad else []


def _put_meta_right(meta: Map) -> list[str]:
    found = []
    if meta.get("nbformat") != NBFORMAT:  # the document always holds the current major version
        found.append(f"meta.nbformat was {meta.get('nbformat')!r}: reset")
        meta["nbformat"] = NBFORMAT
    minor = meta.get("nbformat_minor")
    if minor is None or not _is_count(minor):
        found.append(f"meta.nbformat_minor was {minor!r}: reset")
        meta["nbformat_minor"] = NBFORMAT_MINOR
    if not isinstance(meta.get("metadata"), Map | dict):
        found.append("meta.metadata was not a map: emptied")
        meta["metadata"] = Map()
    return found
