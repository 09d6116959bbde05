"""The update log: numbering, compaction that must not change the document, gap repair."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from pycrdt import Array, Doc

from collab.protocol import parse_state_vector
from collab.rooms import Room
from notebooks import nbio, ydoc
from notebooks import updatelog as persistence
from notebooks.models import Notebook, NotebookUpdate
from notebooks.updatelog import Pending
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.django_db(transaction=True)


def edits(notebook_id, count: int) -> Doc:
    """Write `count` small edits (typing, deleting, a new cell) as a client would."""
    loaded = persistence.load(notebook_id)
    doc = ydoc.doc_from_updates(loaded.state)
    cells = doc.get("cells", type=Array)
    for i in range(count):
        before = doc.get_state()
        text = cells[0]["source"]
        if i % 7 == 6:
            del text[0 : len(str(text)[0].encode())]  # pycrdt offsets are UTF-8 bytes
        else:
            text.insert(len(text), f"{i % 10}é😀"[i % 3])
        if i % 50 == 49:
            cells.append(
                ydoc.cell_to_y({"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": "ü"})
            )
        persistence.append(notebook_id, [Pending(doc.get_update(before), None, None)])
    return doc


def test_it_numbers_updates_per_notebook(notebook):
    first = persistence.append(notebook.pk, [Pending(b"a", None, None), Pending(b"b", None, None)])
    second = persistence.append(notebook.pk, [Pending(b"c", None, None)])
    assert (first, second) == (1, 3)
    assert list(NotebookUpdate.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3]


def test_compaction_reloads_to_exactly_the_same_notebook(notebook):
    doc = edits(notebook.pk, 400)
    before = persistence.load(notebook.pk)
    removed, snapshot_seq = persistence.compact(notebook.pk, keep_recent=50)
    assert (removed, snapshot_seq) == (350, 350)
    after = persistence.load(notebook.pk)
    assert NotebookUpdate.objects.count() == 50
    reloaded = ydoc.doc_from_updates(after.state)
    assert parse_state_vector(reloaded.get_state()) == parse_state_vector(doc.get_state())
    assert ydoc.read_notebook(reloaded) == ydoc.read_notebook(ydoc.doc_from_updates(before.state))
    assert ydoc.read_notebook(reloaded) == ydoc.read_notebook(doc)
    assert after.seq == before.seq == 400


def test_compaction_keeps_storage_proportional_to_the_document(notebook):
    edits(notebook.pk, 2000)
    persistence.compact(notebook.pk, keep_recent=0)
    nb = Notebook.objects.get()
    stored = len(nb.snapshot) + sum(len(d) for d in NotebookUpdate.objects.values_list("data", flat=True))
    assert stored < 20_000  # the text is ~1.7 KB; the history of 2,000 edits is folded away


def test_updates_after_a_compacted_point_start_with_the_snapshot(notebook):
    edits(notebook.pk, 30)
    persistence.compact(notebook.pk, keep_recent=10)
    rows, last, snapshot_first = persistence.updates_after(notebook.pk, 5)
    assert last == 30
    assert snapshot_first
    assert rows[0][0] == 20  # the snapshot, standing for 1..20
    assert [seq for seq, _ in rows[1:]] == list(range(21, 31))


def test_a_room_catching_up_past_the_snapshot_does_not_read_it(notebook):
    """Every worker's room reads a large batch from here (`GapRepair._fetch_stored`): reading
    the whole document's snapshot each time, an editor pasting 70 KB every 50 ms into an 8 MB
    notebook made each other worker read 575 MB from PostgreSQL in 8 s."""
    edits(notebook.pk, 30)
    persistence.compact(notebook.pk, keep_recent=10)
    assert persistence._head(notebook.pk, after=20)["snapshot"] == b""
    assert persistence._head(notebook.pk, after=25)["snapshot"] == b""
    snapshot = bytes(Notebook.objects.get().snapshot)
    assert len(snapshot) > 100
    assert bytes(persistence._head(notebook.pk, after=19)["snapshot"]) == snapshot
    assert bytes(persistence._head(notebook.pk)["snapshot"]) == snapshot
    rows, last, snapshot_first = persistence.updates_after(notebook.pk, 25)
    assert (last, snapshot_first, [seq for seq, _ in rows]) == (30, False, list(range(26, 31)))


def _compacted_after_reading_the_head(notebook_id, monkeypatch) -> None:
    """A reader reads the notebook's row, then a compaction commits, then the reader reads
    the update rows (PostgreSQL's read committed lets the two statements see different
    commits)."""
    stale = persistence._head(notebook_id)
    persistence.compact(notebook_id, keep_recent=10)
    heads, real = iter([stale]), persistence._head
    monkeypatch.setattr(
        persistence, "_head", lambda pk, lock=False, after=None: next(heads, None) or real(pk, lock, after)
    )


def test_a_load_racing_a_compaction_still_has_every_update(notebook, monkeypatch):
    doc = edits(notebook.pk, 60)
    _compacted_after_reading_the_head(notebook.pk, monkeypatch)
    loaded = persistence.load(notebook.pk)
    assert ydoc.read_notebook(ydoc.doc_from_updates(loaded.state)) == ydoc.read_notebook(doc)
    assert (loaded.seq, loaded.snapshot_seq) == (60, 50)


def test_updates_after_racing_a_compaction_start_with_the_snapshot(notebook, monkeypatch):
    edits(notebook.pk, 60)
    _compacted_after_reading_the_head(notebook.pk, monkeypatch)
    rows, last, snapshot_first = persistence.updates_after(notebook.pk, 5)
    assert last == 60
    assert snapshot_first
    assert [seq for seq, _ in rows] == [50, *range(51, 61)]


async def test_a_room_repairs_a_gap_from_the_database(notebook):
    loaded = await database_sync_to_async(persistence.load)(notebook.pk)
    room = Room(str(notebook.pk), loaded)
    await room.start()
    try:
        doc = await database_sync_to_async(edits)(notebook.pk, 5)  # written by "another worker"
        # The fan-out message for 1..4 was lost; only the one for 5 arrives.
        rows, _, _ = await database_sync_to_async(persistence.updates_after)(notebook.pk, 4)
        await room.on_fanout(
            {"type": "updates", "notebook": str(notebook.pk), "first_seq": 5, "updates": [rows[0][1]]}
        )
        assert room.seq == 0
        assert room._ahead == {5}
        await eventually_async(lambda: room.seq == 5, what="gap repair to read 1..4 from the database")
        assert not room._ahead
        assert parse_state_vector(room.doc.get_state()) == parse_state_vector(doc.get_state())
    finally:
        await room.close()


async def test_a_hole_filled_before_the_repair_delay_costs_no_database_read(notebook, settings):
    """With several workers writing, a hole opens at nearly every batch (another worker's message
    comes before this worker's own write returns) and closes a moment later: the repair timer
    must go with the hole, or every worker reads the database every GAP_REPAIR_DELAY for nothing."""
    settings.COLLAB = {**settings.COLLAB, "GAP_REPAIR_DELAY": 3600}
    loaded = await database_sync_to_async(persistence.load)(notebook.pk)
    room = Room(str(notebook.pk), loaded)
    await room.start()
    try:
        await database_sync_to_async(edits)(notebook.pk, 5)
        rows, _, _ = await database_sync_to_async(persistence.updates_after)(notebook.pk, 0)
        message = {"type": "updates", "notebook": str(notebook.pk)}
        await room.on_fanout({**message, "first_seq": 5, "updates": [rows[4][1]]})
        assert room._repair_handle is not None
        await room.on_fanout({**message, "first_seq": 1, "updates": [data for _, data in rows[:4]]})
        assert (room.seq, room._ahead) == (5, set())
        assert room._repair_handle is None
    finally:
        await room.close()


async def test_a_room_catches_up_when_the_last_message_was_lost(notebook):
    loaded = await database_sync_to_async(persistence.load)(notebook.pk)
    room = Room(str(notebook.pk), loaded)
    await room.start()
    room.hold()  # someone uses the room, and edits flow
    room._active_at = asyncio.get_running_loop().time()
    try:
        doc = await database_sync_to_async(edits)(notebook.pk, 3)  # no fan-out message at all
        await eventually_async(lambda: room.seq == 3, what="the periodic resync to read 1..3")
        assert parse_state_vector(room.doc.get_state()) == parse_state_vector(doc.get_state())
    finally:
        await room.close()


async def test_the_periodic_check_leaves_updates_in_flight_to_their_messages(notebook, monkeypatch):
    """With edits flowing, the database is ahead of every room at nearly every check (updates
    committed, their messages on the way): the check repairs only what it already saw at the
    check before and still lacks, not everything in flight (on each of the workers)."""
    loaded = await database_sync_to_async(persistence.load)(notebook.pk)
    room = Room(str(notebook.pk), loaded)
    repairs = []
    original = room.repair

    async def counted():
        repairs.append(room.seq)
        await original()

    monkeypatch.setattr(room, "repair", counted)
    await room.start()
    room.hold()
    try:

        async def checks(n: int) -> None:
            start = room._polled_at
            polls = []
            await eventually_async(
                lambda: (room._polled_at != start and polls.append(room._polled_at), len(set(polls)) >= n)[1],
                what=f"{n} periodic checks",
            )

        room._active_at = asyncio.get_running_loop().time()
        await checks(1)
        await database_sync_to_async(edits)(notebook.pk, 3)  # committed; the message is on its way
        rows, _, _ = await database_sync_to_async(persistence.updates_after)(notebook.pk, 0)
        room._active_at = asyncio.get_running_loop().time()
        await checks(1)
        assert repairs == []
        message = {"type": "updates", "notebook": str(notebook.pk), "first_seq": 1}
        await room.on_fanout({**message, "updates": [data for _, data in rows]})
        assert room.seq == 3
        doc = await database_sync_to_async(edits)(notebook.pk, 2)  # and these messages are lost
        room._active_at = asyncio.get_running_loop().time()
        await eventually_async(lambda: room.seq == 5, what="the check after next to repair 4..5")
        assert repairs == [3]
        assert parse_state_vector(room.doc.get_state()) == parse_state_vector(doc.get_state())
    finally:
        await room.close()


def test_updates_to_a_replaced_document_are_refused(notebook):
    epoch = str(notebook.epoch)
    persistence.append(notebook.pk, [Pending(b"a", None, None)], epoch)
    persistence.replace(notebook.pk, ydoc.notebook_to_update(nbio.blank_notebook()))
    with pytest.raises(persistence.Replaced):
        persistence.append(notebook.pk, [Pending(b"b", None, None)], epoch)
    assert NotebookUpdate.objects.count() == 0


async def test_a_room_whose_database_write_fails_closes_its_sockets_and_unloads(notebook, monkeypatch):
    from collab.rooms import ROOMS, get_room

    room = await get_room(str(notebook.pk))
    closed = []

    class FakeSocket:
        client_id = None
        ext = False
        access_ends_at = None

        def send_now(self, frame):
            return False

        async def send_frame(self, frame):
            pass

        async def close_with(self, code, reason):
            closed.append(code)

        async def recheck_access(self):
            pass

    room.add(FakeSocket())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "append", broken)
    doc = ydoc.doc_from_updates(room.doc.get_update())
    before = doc.get_state()
    doc.get("cells", type=Array)[0]["source"].insert(0, "x")
    room.receive_update(doc.get_update(before), None)
    room.receive_update(doc.get_update(before), None)
    await asyncio.wait_for(room.gone.wait(), 15)
    assert room.closed
    assert closed == [4503]
    assert str(notebook.pk) not in ROOMS


async def test_a_joiner_during_unload_waits_for_the_old_room_and_sees_every_update(notebook):
    from collab.rooms import ROOMS, get_room

    room = await get_room(str(notebook.pk))
    doc = ydoc.doc_from_updates(room.doc.get_update())
    before = doc.get_state()
    doc.get("cells", type=Array)[0]["source"].insert(0, "last words")
    room.receive_update(doc.get_update(before), None)
    closing = asyncio.create_task(room.close())  # the unload timer fired; the write is in flight
    await asyncio.sleep(0)  # one turn of the loop: the close starts before the joiner asks
    fresh = await get_room(str(notebook.pk))
    await closing
    assert fresh is not room
    assert ROOMS[str(notebook.pk)] is fresh
    assert str(fresh.doc.get("cells", type=Array)[0]["source"]) == "last words"
    from collab.fanout import fanout

    assert fanout().handlers[str(notebook.pk)] is fresh  # still subscribed to other workers
    await fresh.close()
