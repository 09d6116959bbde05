"""`collab.yupdate.waits`: what of a client's update a document could not take in whole, read
before the update is applied, checked against what pycrdt makes of it."""

from __future__ import annotations

import asyncio
import random

import pytest
from pycrdt import Array, Doc, Map, Text

from collab import yupdate


def edits(doc: Doc, rng: random.Random) -> None:
    """One random edit of the kinds an editor makes: typing, deleting, cells, metadata."""
    cells = doc.get("cells", type=Array)
    choice = rng.random()
    if not len(cells) or choice < 0.15:
        cells.insert(rng.randint(0, len(cells)), Map({"id": str(rng.random()), "source": Text("")}))
    elif choice < 0.6:
        source = cells[rng.randrange(len(cells))]["source"]
        # pycrdt's index counts UTF-8 bytes: one inside "é" split the character and corrupted
        # the editor's own document (reads of other cells went wrong, then a segfault)
        ascii_only = str(source).isascii()
        where = rng.randint(0, len(source)) if ascii_only else rng.choice([0, len(source)])
        source.insert(where, rng.choice(["a", "bc", "é", "\n"]))
    elif choice < 0.8:
        source = cells[rng.randrange(len(cells))]["source"]
        if len(source) and str(source).isascii():  # pycrdt counts é in other units here
            start = rng.randrange(len(source))
            del source[start : min(len(source), start + rng.randint(1, 3))]
    elif choice < 0.9:
        cells[rng.randrange(len(cells))][rng.choice(["k", "v"])] = rng.choice([1, "x", [1, {"a": None}], 2.5])
    else:
        del cells[rng.randrange(len(cells))]


def history(seed: int) -> list[bytes]:
    """The updates of three editors who edit and now and then sync with one another."""
    rng = random.Random(seed)
    docs = [Doc(client_id=rng.randrange(1, 2**53)) for _ in range(3)]  # the same each run
    updates: list[bytes] = []
    for _ in range(40):
        doc = rng.choice(docs)
        before = doc.get_state()
        try:
            edits(doc, rng)
        except BaseException as failed:  # pycrdt 0.14.13 fails on some edits of its own: stop
            if not isinstance(failed, ValueError | TypeError) and type(failed).__name__ != "PanicException":
                raise
            break
        update = doc.get_update(before)
        if update != b"\x00\x00":
            updates.append(update)
        if rng.random() < 0.3:
            other = rng.choice(docs)
            other.apply_update(doc.get_update(other.get_state()))
    return updates


@pytest.mark.parametrize("seed", range(150))
def test_what_is_read_before_agrees_with_what_pycrdt_makes_of_the_update(seed):
    """Updates of three editors reach a document in a shuffled order. Before each is applied,
    `waits` tells whether the document could take it in whole; pycrdt, applying it, agrees
    (`left_out`, read after). After the first that could not, the document is pycrdt's own
    mess: the run stops there."""
    rng = random.Random(seed)
    updates = history(seed)
    order = updates[:]
    for i in range(len(order)):  # mostly in order, with some swapped with a later one
        if rng.random() < 0.1:
            j = rng.randrange(i, len(order))
            order[i], order[j] = order[j], order[i]
    server = Doc()
    for update in order:
        update = yupdate.as_read(update)
        before = yupdate.state_vector(server.get_state())
        told = yupdate.waits(update, before)
        server.apply_update(update)
        found = yupdate.left_out(update, server.get_state())
        assert told == found, (seed, told, found)
        if found is not None:
            break


def test_a_step_2_of_a_paragraph_typed_by_two_writers_in_turn_is_taken_whole():
    """Each writer's text builds on the other's: integrating them is a walk back and forth."""
    a, b = Doc(), Doc()
    text_a, text_b = a.get("t", type=Text), b.get("t", type=Text)
    for i in range(300):
        writer, reader, text = (a, b, text_a) if i % 2 else (b, a, text_b)
        text.insert(len(text), f"{i} ")
        reader.apply_update(writer.get_update(reader.get_state()))
    assert yupdate.waits(yupdate.as_read(a.get_update()), {}) is None


def test_writers_each_waiting_for_the_other_wait():
    """Two writers' items built on each other's later items: nothing can come first."""
    a = Doc()
    text = a.get("t", type=Text)
    text.insert(0, "x")
    b = Doc()
    b.apply_update(a.get_update())
    b.get("t", type=Text).insert(1, "y")  # b's item after a's
    update = yupdate.as_read(b.get_update())
    clocks = {a.client_id: 0}  # a document lacking a's item: b's waits for it, and a's is there
    assert yupdate.waits(update, clocks) is None  # both in the update: a's first, then b's
    only_b = yupdate.as_read(b.get_update(a.get_state()))
    assert yupdate.waits(only_b, {}) == "items"


def test_a_deletion_of_items_nobody_has_yet_is_told():
    doc = Doc()
    doc.get("t", type=Text).insert(0, "abc")
    deletion = b"\x00\x01" + bytes([5, 1, 2, 4])  # writer 5: clocks 2..5
    assert yupdate.waits(deletion, {5: 6}) is None
    assert yupdate.waits(deletion, {5: 5}) == "deletions ahead"


@pytest.mark.parametrize("garbage", [b"\x01", b"\x01\x01\x05\x00\x1f", b"\x01\x01\x05\x00\x08\x01\x01\x73"])
def test_what_cannot_be_read_says_so(garbage):
    with pytest.raises(yupdate.Unreadable):
        yupdate.waits(garbage, {})


def test_a_string_counts_in_utf16_code_units():
    """Yjs counts a string's clock ticks in UTF-16 code units (😀 is two): an edit after it
    builds on the clock those give."""
    a = Doc()
    text = a.get("t", type=Text)
    text.insert(0, "a😀")
    first = a.get_update()
    before = a.get_state()
    text.insert(len(text), "b")  # pycrdt's index counts UTF-8 bytes
    after = yupdate.as_read(a.get_update(before))
    assert yupdate.waits(after, {a.client_id: 3}) is None
    assert yupdate.waits(after, {a.client_id: 2}) == "items"
    assert yupdate.waits(yupdate.as_read(first), {}) is None


def var_uint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


def test_a_deletion_of_no_items_beyond_the_clocks_is_told():
    """A range of length 0 deletes nothing, but pycrdt keeps it, and `left_out` tells it (the
    room would reload): told before, it is refused alone."""
    deletion = b"\x00\x01" + var_uint(7) + b"\x01" + var_uint(100) + var_uint(0)
    update = yupdate.as_read(deletion)
    doc = Doc()
    told = yupdate.waits(update, {})
    doc.apply_update(update)
    assert told == yupdate.left_out(update, doc.get_state()) == "deletions ahead"


@pytest.mark.parametrize("kind", [b"\x01", b"\x00"])  # deleted item, GC
def test_clocks_past_32_bits_are_not_read(kind):
    """pycrdt counts clocks in 32 bits: an item reaching past 2^32 wraps its writer's clock
    and the next transaction panics (a PanicException, not an Exception)."""
    first = (kind + var_uint(1) + var_uint(1) + b"t" if kind == b"\x01" else kind) + var_uint(2**32 - 1)
    second = bytes([0x84]) + var_uint(5) + var_uint(2**32 - 2) + var_uint(2) + b"ab"
    update = yupdate.as_read(b"\x01\x02" + var_uint(5) + b"\x00" + first + second + b"\x00")
    with pytest.raises(yupdate.Unreadable):
        yupdate.waits(update, {})


async def test_an_item_under_an_item_of_no_type_leaves_nothing_half_applied():
    """An item whose parent is given by the id of a string item: `waits` reads clocks only and
    lets it by; pycrdt integrates the other writers' items first, then raises RuntimeError (not
    ValueError). The room must not go on with part of the update in its document and none of it
    saved or relayed: it reloads."""
    from collab.rooms import Room, RoomError
    from notebooks.updatelog import Loaded

    base = Doc()
    base.get("t", type=Text).insert(0, "abc")
    (writer,) = yupdate.state_vector(base.get_state())
    good = bytes([0x84]) + var_uint(writer) + var_uint(2) + var_uint(1) + b"X"  # after "c"
    bad = bytes([0x04, 0x00]) + var_uint(writer) + var_uint(1) + var_uint(3) + b"bad"
    runs = [b"\x01" + var_uint(2**40) + b"\x00" + good, b"\x01" + var_uint(6) + b"\x00" + bad]
    update = b"\x02" + b"".join(runs) + b"\x00"  # the higher writer's item is integrated first
    room = Room("n", Loaded(epoch="e", state=base.get_update(), seq=0))
    with pytest.raises(RoomError) as refused:
        room.receive_update(update, None)
    assert refused.value.code == 4400
    assert room._pending == []
    assert room.ending
    await asyncio.wait_for(room.gone.wait(), 5)


async def test_a_large_update_pycrdt_panics_on_reloads_the_room(monkeypatch):
    """An update too large to be read before it is applied, with clocks past 2^32: pycrdt's
    panic is a BaseException (pyo3's PanicException) that got past every handler and closed
    the socket with 1011, the room going on with what pycrdt had taken of it. It is refused
    (4400) and the room reloads, and is forgotten whatever state pycrdt is left in."""
    from collab.rooms import ROOMS, Room, RoomError
    from notebooks.updatelog import Loaded

    monkeypatch.setattr(yupdate, "CHECK_BEFORE_MAX_BYTES", 0)
    first = b"\x01" + var_uint(1) + var_uint(1) + b"t" + var_uint(2**32 - 1)  # a deleted item in "t"
    second = bytes([0x84]) + var_uint(5) + var_uint(2**32 - 2) + var_uint(2) + b"ab"
    update = b"\x01\x02" + var_uint(5) + b"\x00" + first + second + b"\x00"
    base = Doc()
    base.get("t", type=Text).insert(0, "abc")
    room = Room("n", Loaded(epoch="e", state=base.get_update(), seq=0))
    ROOMS["n"] = room
    with pytest.raises(RoomError) as refused:
        room.receive_update(update, None)
    assert refused.value.code == 4400
    assert refused.value.penalty
    assert room._pending == []
    await asyncio.wait_for(room.gone.wait(), 5)
    assert "n" not in ROOMS


def test_pieces_count_what_yjs_cannot_merge():
    doc = Doc()
    text = doc.get("t", type=Text)
    text.insert(0, "hello")

    def piece_count(change) -> int:
        before = doc.get_state()
        change()
        return yupdate.pieces(doc.get_update(before))

    assert piece_count(lambda: text.insert(5, "!")) == 0  # typing on
    assert piece_count(lambda: text.insert(0, ">")) == 1  # elsewhere
    assert piece_count(lambda: text.insert(0, "<")) == 1  # before the last: Yjs cannot merge

    def backwards():
        with doc.transaction():
            for _ in range(100):
                text.insert(0, "x")

    assert piece_count(backwards) == 100
    assert yupdate.pieces(doc.get_update(), whole=True) >= 100


def test_the_delete_set_is_read_alone_and_up_to_a_limit_also_from_an_update_with_a_hole():
    doc = Doc()
    text = doc.get("t", type=Text)
    text += "hello"
    before = doc.get_state()
    text += " world"
    with doc.transaction():
        del text[0:1]
        del text[2:3]
    whole, with_hole = doc.get_update(), doc.get_update(before)  # the second lacks "hello"
    for update in (whole, with_hole):
        assert yupdate.delete_set_of(update) == yupdate.delete_ranges(update)
        assert sum(map(len, yupdate.delete_set_of(update, 2).values())) == 2
        with pytest.raises(yupdate.TooManyRanges):
            yupdate.delete_set_of(update, 1)
