"""Import and export of the shared document: a notebook into a pycrdt Doc in the schema of
`notebooks.docschema` (jupyter_ydoc's `YNotebook`), and back. Numbers are stored as floats
(Yjs has no integers); `YNotebook.get()` turns integral floats back into ints.

We write the schema ourselves instead of `YNotebook.set`, which invents kernelspec and
language_info metadata and rejects cells without `source` that nbformat accepts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pycrdt import Array, Doc, Map, Text

from notebooks import docschema, nbio

if TYPE_CHECKING:
    from nbformat import NotebookNode

log = logging.getLogger(__name__)

_NOTEBOOK_KEYS = {"cells", "metadata", "nbformat", "nbformat_minor"}


def _each_scalar(value: Any, change: Callable[[Any], Any]) -> Any:
    """A copy of JSON-like `value` with `change` applied to every number, string, bool, None."""
    if isinstance(value, dict):
        return {k: _each_scalar(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_each_scalar(v, change) for v in value]
    return change(value)


def _floats(value: Any) -> Any:
    """Ints as floats: Yjs has no integers."""
    return _each_scalar(value, lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v)


def _ints(value: Any) -> Any:
    """Integral floats back to ints, as `YNotebook.get` does."""
    return _each_scalar(value, lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)


def _join(text: str | list[str]) -> str:
    return "".join(text) if isinstance(text, list) else text


def output_to_y(output: dict[str, Any]) -> Map:
    """One output as jupyter_ydoc stores it: a Map, stream text as Text."""
    output = _floats(copy.deepcopy(output))
    if output.get("output_type") == "stream":
        output["text"] = Text(_join(output.get("text", "")))
    return Map(output)


def cell_to_y(cell: dict[str, Any]) -> Map:
    cell = _floats(copy.deepcopy(dict(cell)))
    if "source" in cell:
        cell["source"] = Text(_join(cell["source"]))
    cell["metadata"] = Map(cell.get("metadata", {}))
    if cell.get("cell_type") == "code":
        cell["outputs"] = Array([output_to_y(o) for o in cell.get("outputs", [])])
    return Map(cell)


def _fill(array: Array, items: list) -> None:
    """Put `items` into an empty integrated Array in linear time. Inserting at index i walks the
    i items before it (extend() does that for each item: quadratic, 13 s for 20,000 cells);
    inserting each at the front, last first, walks none."""
    for item in reversed(items):
        array.insert(0, item)


def _insert_cells(cells: Array, nb_cells: list) -> None:
    for cell in reversed(nb_cells):
        outputs = cell.get("outputs", []) if cell.get("cell_type") == "code" else []
        cells.insert(0, cell_to_y({**cell, "outputs": []} if outputs else cell))
        if outputs:
            _fill(cells[0]["outputs"], [output_to_y(o) for o in outputs])


def write_notebook(doc: Doc, nb: NotebookNode | dict) -> None:
    """Fill an empty Doc with a notebook."""
    cells = docschema.cells(doc)
    meta = docschema.meta(doc)
    docschema.state(doc)
    with doc.transaction():
        meta["nbformat"] = float(nb["nbformat"])
        meta["nbformat_minor"] = float(nb["nbformat_minor"])
        meta["metadata"] = Map(_floats(copy.deepcopy(dict(nb.get("metadata", {})))))
        for key in nb.keys() - _NOTEBOOK_KEYS:  # top-level keys of future minor versions
            meta[key] = _floats(copy.deepcopy(nb[key]))
        _insert_cells(cells, nb["cells"])


def notebook_to_update(nb: NotebookNode | dict) -> bytes:
    doc = Doc()
    write_notebook(doc, nb)
    return doc.get_update()


def read_notebook(doc: Doc) -> NotebookNode:
    """The notebook a Doc holds, validated by nbformat.

    The server puts right what a client's update breaks (`notebooks.docschema`), but it does not
    check every field of an output, and a document may predate it: what does not validate is
    salvaged (`nbio.salvage`) rather than making the notebook impossible to open or download."""
    meta = docschema.meta(doc).to_py() or {}
    try:
        from jupyter_ydoc import YNotebook  # imported on first use: a worker starts faster

        # Not its deduplicate: it drops a cell identical to an earlier one of the same id, and
        # writes new ids into the document it reads.
        data = YNotebook(doc).get(deduplicate=False)
    except Exception:  # a cell that is not a map
        data = _plain(doc, meta)
    _unique_ids(data.get("cells"))
    for key in meta.keys() - _NOTEBOOK_KEYS:
        data[key] = meta[key]
    try:
        return nbio.from_dict(data)
    except Exception as e:  # a schema error, or nbformat failing on a version it lacks
        nb, found = nbio.salvage(data)
        log.warning("a notebook document did not validate (%s); salvaged: %s", e, "; ".join(found))
        return nb


def _unique_ids(cells: Any) -> None:
    """A cell whose id an earlier cell has gets one of its own (the server gives new cells
    unique ids; a document may predate that, or two people moved one cell at once)."""
    seen = set()
    for cell in cells if isinstance(cells, list) else ():
        if not isinstance(cell, dict):
            continue
        while cell.get("id") in seen:
            cell["id"] = docschema.new_cell_id()
        seen.add(cell.get("id"))


def _plain(doc: Doc, meta: dict) -> dict:
    cells = [c.to_py() if isinstance(c, Map) else c for c in docschema.cells(doc)]
    return {"cells": _ints(cells), "metadata": _ints(meta.get("metadata") or {})}


def doc_from_updates(*updates: bytes) -> Doc:
    doc = Doc()
    for update in updates:
        if update:
            doc.apply_update(update)
    return doc
