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

The room records what each client update changed (`Touched`, from the document's
shallow observers while the update is applied; typing only changes Text and records nothing),
then calls
`put_right` in a server transaction: it removes cells and outputs that cannot be read and fills
in or resets fields of the wrong type. That correction is queued right behind the update, so
both are written in the same batch and other clients receive them merged into one update: they
never see the broken state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycrdt import Array, Doc, Map, Text

from notebooks.nbio import CELL_TYPES

OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "error"})
_OUTPUT_RUNS_DELETED = 64  # more runs of unreadable outputs in a cell: all its outputs are removed
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
    """What a client's update changed that the schema checks (`put_right`); cells are the
    watch's (`docwatch.Cell`)."""

    cells: set[Any] = field(default_factory=set)  # inserted cells, or cells whose keys changed
    outputs: set[Any] = field(default_factory=set)  # cells with a new outputs Array: check it whole
    bad_outputs: dict[Any, list[int]] = field(default_factory=dict)  # outputs inserted unreadable
    odd: bool = False  # items that are not maps were inserted among the cells
    meta: bool = False

    def __bool__(self) -> bool:
        return bool(self.cells or self.outputs or any(self.bad_outputs.values()) or self.odd or self.meta)


class WatchedCells(Protocol):
    """What `put_right` reads of the document's watch (`docwatch.Watch`)."""

    def known(self) -> list: ...

    def outputs_json(self, cell: Any) -> list: ...


def put_right(doc: Doc, touched: Touched, watch: WatchedCells) -> list[str]:
    """Repair the places `touched` names; return what was wrong, for the log. Call it inside a
    transaction: it writes only where something is wrong. `watch`: the document's, which saw
    the update and takes this repair's own changes when the transaction ends (until then its
    cells are as the update left them). Reads no cell, and no output, by its position."""
    found: list[str] = []
    cells_now = watch.known()
    positions = {cell: i for i, cell in enumerate(cells_now) if cell is not None}
    checked = touched.cells | touched.outputs | {c for c, bad in touched.bad_outputs.items() if bad}
    for cell in sorted(positions.keys() & checked, key=positions.__getitem__):
        i = positions[cell]
        if cell in touched.cells:
            found += _put_cell_right(cell.map, i)
        outputs = cell.map.get(OUTPUTS)
        if cell.map.get(CELL_TYPE) == "code" and isinstance(outputs, Array):
            if cell in touched.outputs:  # a new Array: every output
                bad = [j for j, output in enumerate(watch.outputs_json(cell)) if not readable_output(output)]
            else:
                bad = touched.bad_outputs.get(cell, [])
            found += _remove_outputs(outputs, bad, i)
    if touched.cells:
        found += _give_unique_ids(cells_now, positions, touched.cells)
    if touched.odd:
        unreadable = [i for i, cell in enumerate(cells_now) if cell is None]
        found += [f"cell {i} is not a map: removed" for i in unreadable]
        array = cells(doc)
        for start, stop in reversed(_runs(unreadable)):
            del array[start:stop]
    if touched.meta:
        found += _put_meta_right(meta(doc))
    return found


def unique_ids(doc: Doc, watch: WatchedCells) -> list[str]:
    """Give every cell whose id an earlier cell has an id of its own (changes that were each
    right alone but repeat an id together: one cell moved by two people on two workers)."""
    seen, found = set(), []
    for i, cell in enumerate(watch.known()):
        if cell is None:
            continue
        if cell.id is not None and cell.id in seen:
            found.append(f"cell {i} has the id of an earlier cell: given one of its own")
            cell.map[ID] = new_cell_id()
        seen.add(cell.id)
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


def _give_unique_ids(cells_now: list, positions: dict, touched: set) -> list[str]:
    """Cells are found by their id (runs, deletes, presence, the editor's views): a touched cell
    whose id another cell has gets a new one; an untouched cell, or the first of the touched
    ones, keeps it."""
    seen = {cell.id for cell in cells_now if cell is not None and cell not in touched}
    found = []
    for cell in sorted(positions.keys() & touched, key=positions.__getitem__):
        cell_id = _id_of(cell.map.get(ID))  # as `_put_cell_right` may have left it
        if cell_id in seen:
            found.append(f"cell {positions[cell]} has the id of another cell: given one of its own")
            cell.map[ID] = cell_id = new_cell_id()
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


def _remove_outputs(outputs: Array, bad: list[int], index: int) -> list[str]:
    """Remove the outputs at `bad`, run by run: each deletion walks the outputs before it, so
    beyond `_OUTPUT_RUNS_DELETED` runs (unreadable outputs strewn among readable ones, which
    no client of the editor's sends) the cell's outputs are all removed in one deletion."""
    if not bad:
        return []
    runs = _runs(sorted(set(bad)))
    if len(runs) > _OUTPUT_RUNS_DELETED:
        count = len(outputs)
        del outputs[0:count]
        return [f"cell {index} had {len(set(bad))} unreadable output(s) among others: all {count} removed"]
    for start, stop in reversed(runs):
        del outputs[start:stop]
    return [f"cell {index} had {len(set(bad))} unreadable output(s): removed"]


def readable_output(output: Any) -> bool:
    """An output a reader can show: a map (or plain data) of a known `output_type`."""
    return isinstance(output, Map | dict) and output.get("output_type") in OUTPUT_TYPES


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


def _id_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None
