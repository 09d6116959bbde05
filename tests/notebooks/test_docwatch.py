"""The document's shallow observers (`docwatch.Watch`): what each client update changed, for the
schema repair and for edit attribution, as clients' updates made on their own Docs reach it."""

from __future__ import annotations

import gc
import weakref

from pycrdt import Array, Doc, Map, Text

from notebooks import docschema, docwatch


def code_cell(cell_id: str, outputs: list | None = None) -> Map:
    fields = {"cell_type": "code", "source": Text("x"), "metadata": Map(), "execution_count": None}
    return Map({"id": cell_id, **fields, "outputs": Array(outputs or [])})


def stream(text: str) -> Map:
    return Map({"output_type": "stream", "name": "stdout", "text": text})


class Room:
    """The room's path: a watched Doc, clients' updates recorded, repaired, then attributed."""

    def __init__(self, *cells: Map) -> None:
        self.doc = Doc()
        self.watch = docwatch.Watch(self.doc)
        with self.doc.transaction():
            docschema.cells(self.doc).extend(list(cells))
        self.client = Doc()
        self.client.apply_update(self.doc.get_update())

    def send(self, change) -> tuple[set[str], list[str]]:
        """Apply `change(client cells)` as one client update; return (edited ids, repairs)."""
        before = self.client.get_state()
        with self.client.transaction():
            change(docschema.cells(self.client))
        with self.watch.recording() as touched:
            self.doc.apply_update(self.client.get_update(before))
        found: list[str] = []
        if touched:
            with self.doc.transaction():
                found = docschema.put_right(self.doc, touched, self.watch)
        self.client.apply_update(self.doc.get_update(self.client.get_state()))
        return self.watch.edited_ids(), found

    def outputs(self, index: int) -> list:
        return docschema.cells(self.doc)[index]["outputs"].to_py()


def test_typing_and_metadata_edits_are_attributed_and_need_no_repair():
    room = Room(code_cell("a"), code_cell("b"))
    assert room.send(lambda cells: cells[1]["source"].insert(0, "typed")) == ({"b"}, [])
    assert room.send(lambda cells: cells[0]["metadata"].update({"tags": ["x"]})) == ({"a"}, [])
    assert room.send(lambda cells: cells[0]["outputs"].append(stream("hi"))) == ({"a"}, [])
    edited, found = room.send(lambda cells: cells.__delitem__(0))
    assert edited == {"(deleted cells)"}
    assert found == []


def test_an_output_changed_in_place_is_put_right():
    """An output's map is watched on its own: an editor who sets a known output's type to one no
    reader knows, without touching the outputs list, still sees it removed."""
    room = Room(code_cell("a", [stream("one"), stream("two")]))
    edited, found = room.send(lambda cells: cells[0]["outputs"][1].update({"output_type": "bogus"}))
    assert edited == {"a"}
    assert found == ["cell 0 had 1 unreadable output(s): removed"]
    assert [o["text"] for o in room.outputs(0)] == ["one"]


def test_a_replaced_outputs_list_is_checked_and_watched_from_then_on():
    room = Room(code_cell("a", [stream("old")]))
    _, found = room.send(lambda cells: cells[0].update({"outputs": Array([stream("new"), "not an output"])}))
    assert found == ["cell 0 had 1 unreadable output(s): removed"]
    assert [o["text"] for o in room.outputs(0)] == ["new"]
    _, found = room.send(lambda cells: cells[0]["outputs"][0].update({"output_type": 7}))
    assert found == ["cell 0 had 1 unreadable output(s): removed"]
    assert room.outputs(0) == []


def test_an_inserted_cells_outputs_are_watched():
    room = Room(code_cell("a"))
    _, found = room.send(lambda cells: cells.append(code_cell("b", [stream("1"), stream("2")])))
    assert found == []
    _, found = room.send(lambda cells: cells[1]["outputs"][0].update({"output_type": None}))
    assert found == ["cell 1 had 1 unreadable output(s): removed"]
    assert [o["text"] for o in room.outputs(1)] == ["2"]


def test_a_deleted_cell_is_let_go():
    room = Room(code_cell("a"), code_cell("b"))
    gone = room.watch.cells[0]
    room.send(lambda cells: cells.__delitem__(0))
    assert gone.gone
    assert gone._own is None
    assert gone._children == {}
    assert [c.id for c in room.watch.cells] == ["b"]


def test_a_failure_while_watching_is_recovered_by_reading_the_cells_afresh(monkeypatch):
    room = Room(code_cell("a"), code_cell("b"))

    def broken_once(value):
        monkeypatch.undo()
        raise RuntimeError("a bug")

    monkeypatch.setattr(docwatch, "_id_of", broken_once)
    before = room.client.get_state()
    docschema.cells(room.client)[1]["id"] = "renamed"
    room.doc.apply_update(room.client.get_update(before))
    assert room.watch._lost
    assert [c.id for c in room.watch.known()] == ["a", "renamed"]
    assert not room.watch._lost
    room.send(lambda cells: cells[1].update({"id": "a"}))  # repaired: known to be a repeat
    ids = [str(c["id"]) for c in docschema.cells(room.doc)]
    assert ids[0] == "a"
    assert len(set(ids)) == 2


def test_a_closed_watch_and_its_document_are_freed():
    room = Room(code_cell("a", [stream("x")]))
    room.send(lambda cells: cells.append(code_cell("b")))
    room.watch.close()
    watch = weakref.ref(room.watch)
    doc = weakref.ref(room.doc)
    del room
    gc.collect()
    assert watch() is None
    assert doc() is None


def test_no_deep_observer_is_used(monkeypatch):
    """pycrdt works out every deep event's path (it walks deleted items too): the watch uses
    shallow observers only."""
    from pycrdt._base import BaseType

    def refused(self, callback):
        raise AssertionError("a deep observer")

    monkeypatch.setattr(BaseType, "observe_deep", refused)
    room = Room(code_cell("a"))
    room.send(lambda cells: cells.append(code_cell("b", [stream("1")])))
    assert [c.id for c in room.watch.cells] == ["a", "b"]
