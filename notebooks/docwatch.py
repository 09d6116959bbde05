"""What each transaction changes in a notebook document, seen by shallow observers at the places
the schema names (`notebooks.docschema`), never by a deep one.

pycrdt works out the path of every event it hands to a deep observer, and yrs sorts a deep
observer's events by their paths: a path walks the items of each array on its way, deleted ones
included. With one deep observer on the cells, an editor could hold a worker (every room on it)
for seconds: pile up deleted cells, then send one update that sets a key on 1,000 cells. A
shallow observer's events have empty paths, so each change here costs the same whatever the rest
of the document holds. Watched:

- `cells`: inserted and deleted cells, kept in document order (`Watch.cells`; reading a pycrdt
  Array's i-th item walks the items before it, so the cells are never read by position);
- each cell's map: keys set or removed (the cell is checked again; a new id is noted);
- its `source` Text and `metadata` Map: edits, for attribution only;
- its `outputs` Array: the outputs it gained are checked (all of them, as JSON, for a new
  Array: an inserted cell's, or one set under the key; reading an Array's items one by one
  walks the items before each). A change inside an output's map is not watched: readers leave
  out an output they cannot read (the editor, `nbio.salvage` for downloads);
- `meta`: its keys.

Changes further down (a value inside metadata, an output's data) are neither checked nor
attributed: the schema says nothing about them. A failure while watching (it must not surface
from pycrdt's transaction) makes the watch read the cells afresh when next asked (`known`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from pycrdt import Doc, Map
from pycrdt._base import observe_callback  # pycrdt's own event wrapping, see `_observe`
from pycrdt._pycrdt import Array as RawArray
from pycrdt._pycrdt import Map as RawMap
from pycrdt._pycrdt import Text as RawText

from notebooks import docschema
from notebooks.docschema import ID, METADATA, OUTPUTS, SOURCE, Touched

log = logging.getLogger(__name__)

_CHILDREN = {SOURCE: RawText, METADATA: RawMap, OUTPUTS: RawArray}


class Cell:
    """A watched cell: its map, its id (None unless a string), and the subscriptions that keep
    them."""

    __slots__ = ("__weakref__", "_children", "_generation", "_own", "gone", "id", "map", "ref")

    def __init__(self, map_: Map, cell_id: str | None) -> None:
        self.map, self.id, self.gone = map_, cell_id, False
        self.ref = weakref.ref(self)
        self._own: Any = None
        self._children: dict[str, Any] = {}
        self._generation = 0  # of its outputs Array: events of one it no longer has are ignored

    def drop(self) -> None:
        self.gone = True
        for subscription in (self._own, *self._children.values()):
            _drop(subscription)
        self._own, self._children = None, {}


class Watch:
    """Keeps `cells` (a Cell, or None for an item that is not a map, in document order) from the
    document's first transaction on; while `recording`, notes what changed. `changed`: a cell
    was inserted, deleted or renamed since the holder last cleared it."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.cells: list[Cell | None] = []
        self.changed = False
        self._lost = False
        self._recording: Touched | None = None
        self._edited: set[Cell] = set()
        self._deleted = False
        self._array = docschema.cells(doc)
        self._meta = docschema.meta(doc)
        self._ref = weakref.ref(self)
        self._own = [
            _observe(self._array, partial(_call, self._ref, Watch._on_cells, None)),
            _observe(self._meta, partial(_call, self._ref, Watch._on_meta, None)),
        ]
        if len(self._array):  # a document with cells already: read them once
            self._lose()

    def close(self) -> None:
        for subscription in self._own:
            _drop(subscription)
        self._own = []
        self._drop_cells()

    @contextlib.contextmanager
    def recording(self) -> Iterator[Touched]:
        """Note what the transactions inside change: yields the Touched, filled as they end."""
        self.known()  # after a failure or `reset`: watched afresh before anything is noted
        self._recording, self._edited, self._deleted = Touched(), set(), False
        try:
            yield self._recording
        finally:
            self._recording = None

    def edited_ids(self) -> set[str]:
        """The ids of the cells the last recording saw changed (for edit attribution)."""
        ids = {cell.id for cell in self._edited if cell.id}
        if self._deleted:
            ids.add("(deleted cells)")
        return ids

    def known(self) -> list[Cell | None]:
        """The cells; read afresh, item by item, after a failure lost track of them."""
        if self._lost:
            self._drop_cells()
            with self.doc.transaction():  # the one it is called in, if any
                self.cells = [self._add(c) if isinstance(c, Map) else None for c in self._array]
            self._lost = False
        return self.cells

    def reset(self) -> None:
        """Read the cells afresh when next asked: transactions may have changed them without
        events (pycrdt 0.14.13, updates applied before one they follow)."""
        self._lose()

    def _lose(self) -> None:
        self._lost = True
        self.changed = True

    def _drop_cells(self) -> None:
        for cell in self.cells:
            if cell is not None:
                cell.drop()
        self.cells = []

    # observers: they run inside pycrdt's transaction, after all its changes

    def _on_cells(self, _, event) -> None:
        recording = self._recording
        cells, index = self.cells, 0
        for change in event.delta:
            if "retain" in change:
                index += change["retain"]
            elif "insert" in change:
                added = [self._add(c) if isinstance(c, Map) else None for c in change["insert"]]
                cells[index:index] = added
                index += len(added)
                if recording is not None:
                    recording.cells.update(c for c in added if c is not None)
                    recording.outputs.update(c for c in added if c is not None)
                    recording.odd |= None in added
                    self._edited.update(c for c in added if c is not None)
            elif "delete" in change:
                end = index + change["delete"]
                for cell in cells[index:end]:
                    if cell is not None:
                        cell.drop()
                del cells[index:end]
                self._deleted = True
        self.changed = True

    def _on_meta(self, _, event) -> None:
        if self._recording is not None:
            self._recording.meta = True

    def _on_cell(self, cell: Cell, event) -> None:
        keys = event.keys
        if self._recording is not None:
            self._recording.cells.add(cell)
            self._edited.add(cell)
        if ID in keys:
            cell.id = _id_of(cell.map.get(ID))
            self.changed = True
        for key in _CHILDREN.keys() & keys.keys():
            self._watch_child(cell, key, _txn(self.doc))
        if OUTPUTS in keys and self._recording is not None:
            self._recording.outputs.add(cell)  # a new Array: checked whole

    def _on_edit(self, cell: Cell, event) -> None:
        if self._recording is not None:
            self._edited.add(cell)

    def _on_outputs(self, cell: Cell, generation: int, event) -> None:
        if generation != cell._generation or self._recording is None:
            return
        self._edited.add(cell)
        bad, index = self._recording.bad_outputs.setdefault(cell, []), 0
        for change in event.delta:  # indexes after the transaction
            if "retain" in change:
                index += change["retain"]
            elif "insert" in change:
                inserted = change["insert"]
                bad += [index + i for i, item in enumerate(inserted) if not docschema.readable_output(item)]
                index += len(change["insert"])

    def outputs_json(self, cell: Cell) -> list:
        """The cell's outputs as plain data (read in one pass); call it inside a transaction."""
        outputs = _get(cell.map.integrated, _txn(self.doc), OUTPUTS)
        return json.loads(outputs.to_json(_txn(self.doc))) if type(outputs) is RawArray else []

    # subscribing: the cells' own parts are read through pycrdt's raw types (a wrapper object
    # costs 5 µs; a notebook of 10,000 cells has 40,000 parts watched)

    def _add(self, map_: Map) -> Cell:
        txn, raw = _txn(self.doc), map_.integrated
        cell = Cell(map_, _id_of(_get(raw, txn, ID)))
        on_keys = partial(_call, self._ref, Watch._on_cell, cell.ref)
        cell._own = raw.observe(partial(observe_callback, on_keys, self.doc, 1))
        edited = partial(_call, self._ref, Watch._on_edit, cell.ref)  # the event is not read
        for key in (SOURCE, METADATA):
            child = _get(raw, txn, key)
            if type(child) is _CHILDREN[key]:
                cell._children[key] = child.observe(edited)
        self._watch_outputs(cell, _get(raw, txn, OUTPUTS), txn)
        return cell

    def _watch_child(self, cell: Cell, key: str, txn: Any) -> None:
        """A key of the cell was set: watch what it holds now."""
        _drop(cell._children.pop(key, None))
        child = _get(cell.map.integrated, txn, key)
        if key == OUTPUTS:
            self._watch_outputs(cell, child, txn)
        elif type(child) is _CHILDREN[key]:
            cell._children[key] = child.observe(partial(_call, self._ref, Watch._on_edit, cell.ref))

    def _watch_outputs(self, cell: Cell, outputs: Any, txn: Any) -> None:
        cell._generation += 1
        if type(outputs) is RawArray:
            callback = partial(_call, self._ref, Watch._on_outputs, cell.ref, cell._generation)
            cell._children[OUTPUTS] = outputs.observe(partial(observe_callback, callback, self.doc, 1))


def _call(watch_ref, method, cell_ref, *args) -> None:
    """An observer's body: holds neither the watch nor the cell (pycrdt keeps its callbacks in
    Rust, out of reach of Python's cycle collector), and never raises into the transaction."""
    watch = watch_ref()
    if watch is None or watch._lost:
        return
    cell = None
    if cell_ref is not None:
        cell = cell_ref()
        if cell is None or cell.gone:
            return
    try:
        method(watch, cell, *args)  # the bound arguments, then the event
    except Exception:
        log.exception("watching the notebook's cells failed; they are read afresh")
        watch._lose()


def _observe(shared: Any, callback: Callable) -> Any:
    """`shared.observe(callback)`, without pycrdt's per-call inspection of the callback's
    signature (8 µs, against 0.5 µs here; a notebook of 10,000 cells has 40,000 of these).
    Events reach the callback as `observe` hands them, inside a read transaction."""
    return shared.integrated.observe(partial(observe_callback, callback, shared.doc, 1))


def _txn(doc: Doc) -> Any:
    """The raw transaction the document is in: the one pycrdt runs observers in (`observe_callback`
    wraps it), or a `with doc.transaction()` block's."""
    return doc._txn._txn


def _get(shared: Any, txn: Any, key: str) -> Any:
    """A raw map's value under `key`, raw as well (None if it has none)."""
    try:
        return shared.get(txn, key)
    except ValueError:  # pycrdt's "Key error"
        return None


def _drop(subscription: Any) -> None:
    if subscription is not None:
        subscription.drop()


def _id_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None
