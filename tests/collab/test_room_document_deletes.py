"""What a room's document and its update log make of a client's deletions of items nobody has
yet: pycrdt (as Yjs) keeps such a deletion aside and applies it to the item when it comes, and
the update log, merged, applies it whatever the order. The server's own changes (the schema
repair, kernel outputs) are written under the room's client id, which every client sees in the
updates relayed to it."""

from __future__ import annotations

import contextlib

import pytest
from pycrdt import Array, Doc, Map, Text, merge_updates

from collab import yupdate
from collab.rooms import Room, RoomError
from notebooks import docschema
from notebooks.updatelog import Loaded


def code_cell(cell_id: str) -> Map:
    fields = {"cell_type": "code", "source": Text("x"), "metadata": Map(), "outputs": Array()}
    return Map({"id": cell_id, "execution_count": None, **fields})


def notebook() -> Doc:
    doc = Doc()
    docschema.meta(doc).update({"nbformat": 4.0, "nbformat_minor": 5.0, "metadata": Map()})
    docschema.cells(doc).append(code_cell("c0"))
    return doc


def var_uint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


def deletion_ahead(client: int, clock: int, length: int) -> bytes:
    """An update of no items that deletes `length` items of `client` from `clock` on: items that
    client has not written yet (a shape any client can send)."""
    return var_uint(0) + var_uint(1) + var_uint(client) + var_uint(1) + var_uint(clock) + var_uint(length)


def logged(base: Doc, room: Room) -> Doc:
    doc = Doc()
    doc.apply_update(merge_updates(base.get_update(), *(p.data for p, _ in room._pending)))
    return doc


def client_of(doc: Doc) -> Doc:
    client = Doc()
    client.apply_update(doc.get_update())
    return client


@pytest.fixture(params=["before", "after"])
def read(request, monkeypatch) -> str:
    """Whether the room reads the update before applying it (one of at most
    `CHECK_BEFORE_MAX_BYTES`: refused alone) or after (a larger one: the room reloads)."""
    if request.param == "after":
        monkeypatch.setattr(yupdate, "CHECK_BEFORE_MAX_BYTES", 0)
    return request.param


def refused_and_reloaded(base: Doc, update_for, read: str) -> Room:
    """Send `update_for(room)` to a room, see it refused with nothing of it kept, and return the
    room that goes on: the same one if the update was refused before it was applied, else the
    one the next join loads (the update log holds nothing of it)."""
    room = Room("n", Loaded(epoch="e", state=base.get_update(), seq=0))
    with pytest.raises(RoomError) as refused:
        room.receive_update(update_for(room), None)
    assert refused.value.code == 4400
    assert room._pending == []
    assert refused.value.penalty == (read == "after")
    assert room.ending == (read == "after")
    if read == "before":
        return room
    room._docwatch.close()
    return Room("n", Loaded(epoch="e", state=base.get_update(), seq=0))


async def test_a_deletion_of_the_servers_items_to_come_is_refused_and_the_repair_stays(read):
    """An editor sent one 10-byte update deleting the room's next 2^30 items (the room's client
    id is in every repair relayed to it), then removed `meta.nbformat`: the room put it back, but
    the update log, merged, deleted the repair, and a room loaded from the log (after a restart,
    or on another worker) held `meta` without `nbformat`. The same held for every change the
    server makes (cell ids given, cell types made raw, outputs removed), and for other editors'
    typing to come. Such a deletion is now refused, and the room reloads without it."""
    base = notebook()
    room = refused_and_reloaded(base, lambda room: deletion_ahead(room.doc.client_id, 0, 1 << 30), read)
    try:
        editor = client_of(base)
        before = editor.get_state()
        del docschema.meta(editor)["nbformat"]
        room.receive_update(editor.get_update(before), None)
        assert docschema.meta(room.doc).get("nbformat") == 4.0
        log = logged(base, room)
        reloaded = Room("n", Loaded(epoch="e", state=log.get_update(), seq=0))
        reloaded._docwatch.close()
        joiner = client_of(reloaded.doc)
        assert [docschema.meta(d).get("nbformat") for d in (log, reloaded.doc, joiner)] == [4.0, 4.0, 4.0]
    finally:
        room._docwatch.close()


async def test_a_deletion_of_another_editors_typing_to_come_is_refused(read):
    """The same shape against another editor's client id (in every update relayed from them):
    what they type next would reach the database and be deleted there."""
    base = notebook()
    typist = client_of(base)
    room = refused_and_reloaded(base, lambda room: deletion_ahead(typist.client_id, 0, 1 << 30), read)
    try:
        before = typist.get_state()
        docschema.cells(typist)[0]["source"].insert(0, "typed ")
        room.receive_update(typist.get_update(before), None)
        assert str(docschema.cells(logged(base, room))[0]["source"]) == "typed x"
    finally:
        room._docwatch.close()


async def test_kernel_outputs_reach_the_log(read):
    """After such a deletion was refused, the kernel's output written by the room (`Room.edit`)
    is in the update log as in the room's document."""
    base = notebook()
    room = refused_and_reloaded(base, lambda room: deletion_ahead(room.doc.client_id, 0, 1 << 30), read)
    try:

        def output(doc: Doc) -> None:
            cell = docschema.cells(doc)[0]
            cell["outputs"].append(Map({"output_type": "stream", "name": "stdout", "text": "42\n"}))
            cell["execution_count"] = 1

        await room.edit(output)
        assert len(docschema.cells(room.doc)[0]["outputs"]) == 1
        cell = docschema.cells(logged(base, room))[0]
        assert (len(cell["outputs"]), cell.get("execution_count")) == (1, 1)
    finally:
        room._docwatch.close()


def deletions_as_a_browser_reads_them(update: bytes) -> list[tuple[int, int, int]]:
    """The delete set of an update of no items, read as Yjs in a browser reads it: numbers up to
    2^53 (pycrdt reads clocks and lengths as 32-bit numbers)."""
    assert update[0] == 0, "an update of no items"
    pos, out = 1, []

    def number() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = update[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    for _ in range(number()):
        client = number()
        out += [(client, number(), number()) for _ in range(number())]
    return out


@pytest.mark.parametrize(("clock", "length"), [(0, 1 << 32), (1 << 32, 1 << 30)])
async def test_a_deletion_ahead_in_numbers_beyond_32_bits_is_not_relayed_to_browsers(clock, length):
    """pycrdt reads a deletion's clock and length as 32-bit numbers: one of 2^32 items from
    clock 0 was, to the room, a deletion of nothing, and passed the check of deletions ahead;
    saved and relayed as the client sent it, every browser (Yjs reads 53-bit numbers) deleted
    all that editor had typed and all they typed next, and sent those deletions back in its
    sync step 2 when it reconnected: the database lost them too. What the room saves and
    relays is what it read, or the update is refused."""
    base = notebook()
    typist = client_of(base)
    before = typist.get_state()
    docschema.cells(typist)[0]["source"].insert(0, "typed ")
    room = Room(
        "n", Loaded(epoch="e", state=merge_updates(base.get_update(), typist.get_update(before)), seq=0)
    )
    try:
        with contextlib.suppress(RoomError):
            room.receive_update(deletion_ahead(typist.client_id, clock, length), None)
        state = yupdate.state_vector(room.doc.get_state())
        for pending, _ in room._pending:
            for client, start, size in deletions_as_a_browser_reads_them(pending.data):
                assert start + size <= state.get(client, 0), (client, start, size)
    finally:
        room._docwatch.close()
