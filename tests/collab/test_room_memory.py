"""What a room holds on to: an editor sending updates of one-character items that cannot merge
(typed at the start of a cell, each item before the last) grew a worker by tens of MB per MB
sent, and the worker kept it after the room closed (bench/room_memory.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from pycrdt import Array

from collab import broadcast, protocol, rooms, yupdate
from collab.fanout import fanout
from collab.rooms import get_room
from config import memory
from notebooks import ydoc
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.django_db(transaction=True)


class FrameSocket:
    client_id = None
    ext = False
    access_ends_at = None
    may_run = False

    def __init__(self):
        self.frames: list[bytes] = []

    def send_now(self, frame):
        self.frames.append(frame.data)
        return True

    async def send_frame(self, frame):
        self.frames.append(frame)

    async def close_with(self, code, reason):
        pass

    async def recheck_access(self):
        pass


def typed_backwards(room: rooms.Room, chars: int) -> bytes:
    """One update typing `chars` characters at the start of the first cell, one at a time: each
    a one-character item of its own (what Yjs cannot merge)."""
    doc = ydoc.doc_from_updates(room.doc.get_update())
    before = doc.get_state()
    source = doc.get("cells", type=Array)[0]["source"]
    with doc.transaction():
        for i in range(chars):
            source.insert(0, "abcdefghij"[i % 10])
    return doc.get_update(before)


def pasted(room: rooms.Room, size: int, char: str = "x") -> bytes:
    doc = ydoc.doc_from_updates(room.doc.get_update())
    before = doc.get_state()
    doc.get("cells", type=Array)[0]["source"].insert(0, char * size)
    return doc.get_update(before)


async def test_a_closed_room_whose_document_was_big_gives_its_memory_back(notebook, monkeypatch):
    """glibc keeps the pages a freed document used: a worker stayed 65 MB larger after a room
    of 2.3 MB of such updates closed. Once the room and its document are freed, the worker
    hands them back (as after an import)."""
    room = await get_room(str(notebook.pk))
    room.receive_update(pasted(room, rooms.GIVE_BACK_AFTER_BYTES), None)
    await room.flushed()
    doc = weakref.ref(room.doc)
    calls: list[bool] = []
    monkeypatch.setattr(memory, "give_back", lambda: calls.append(doc() is None))
    await room.close()
    del room
    await eventually_async(lambda: calls, what="the memory given back")
    assert calls == [True]  # after the document was freed, once


async def test_a_closed_small_room_leaves_the_allocator_alone(notebook, monkeypatch):
    """Trimming walks every arena of the worker: not for every small room closing."""
    calls: list[int] = []
    monkeypatch.setattr(memory, "give_back", lambda: calls.append(1))
    room = await get_room(str(notebook.pk))
    room.receive_update(pasted(room, 100), None)
    await room.close()
    del room
    for _ in range(3):
        await asyncio.sleep(0)  # proving nothing comes: a give-back is called within the next turn
    assert calls == []


async def test_the_local_sockets_frames_merge_a_bounded_amount_at_a_time(notebook, monkeypatch):
    """Merging updates decodes every item they hold at once (about 200 bytes each): the relay
    of 2.3 MB of one-character items took 31 MB for a moment, which the worker kept. What waits
    for the local sockets is merged a bounded number of bytes at a time, and every update gets
    there."""
    merged: list[int] = []
    real = broadcast.merge_updates

    def merge(*updates):
        merged.append(sum(map(len, updates)))
        return real(*updates)

    monkeypatch.setattr(broadcast, "merge_updates", merge)
    monkeypatch.setattr(broadcast, "MERGE_MAX_BYTES", 60_000)  # two of these updates
    room = await get_room(str(notebook.pk))
    base = room.doc.get_update()
    watcher = FrameSocket()
    room.add(watcher)
    updates = []
    for _ in range(6):
        updates.append(typed_backwards(room, 2000))
        room.doc.apply_update(updates[-1])
    assert sum(map(len, updates)) > 2 * broadcast.MERGE_MAX_BYTES
    room.send_updates_local(updates)
    await eventually_async(lambda: watcher.frames and not room._outbox, what="the queue sent")
    assert len(merged) == 3
    assert max(merged) <= broadcast.MERGE_MAX_BYTES
    received = ydoc.doc_from_updates(base)
    for frame in watcher.frames:
        received.apply_update(protocol.parse(frame).payload)
    assert received.get_state() == room.doc.get_state()
    await room.close()


async def test_updates_for_a_room_without_sockets_are_not_merged(notebook, monkeypatch):
    merged: list[int] = []
    monkeypatch.setattr(broadcast, "merge_updates", lambda *updates: merged.append(1))
    room = await get_room(str(notebook.pk))
    room.receive_update(typed_backwards(room, 10), None)
    room.receive_update(typed_backwards(room, 10), None)
    await room.flushed()
    await asyncio.wait_for(room._committed.join(), 5)  # relayed: handed to the sender
    for _ in range(3):
        await asyncio.sleep(0)  # proving nothing comes: the sender merges within a turn of the relay
    assert merged == []
    await room.close()


class Held:
    """Something in a message whose life the test can see."""


async def test_the_fan_out_reader_lets_go_of_a_message_once_it_is_handled(notebook):
    """A batch from another worker (up to megabytes of updates) was held by the reader until the
    next message came, however long that was."""
    seen: list[weakref.ref] = []

    class Handler:
        async def on_fanout(self, event):
            seen.append(weakref.ref(event["held"]))

    notebook_id = "held-" + str(notebook.pk)
    await fanout().subscribe(notebook_id, Handler())
    try:
        await fanout().layer.group_send(
            f"nb.{notebook_id}",
            {"type": "kernel", "notebook": notebook_id, "origin": "another worker", "held": Held()},
        )
        await eventually_async(lambda: seen, what="the message handled")
        gc.collect()
        await eventually_async(lambda: seen[0]() is None, what="the message let go", timeout=2)
    finally:
        await fanout().unsubscribe(notebook_id, fanout().handlers[notebook_id])


def typed_on(room: rooms.Room, text: str) -> list[bytes]:
    """Keystrokes at the end of the first cell, one update each, as the editor sends them."""
    doc = ydoc.doc_from_updates(room.doc.get_update())
    source = doc.get("cells", type=Array)[0]["source"]
    updates = []
    for char in text:
        before = doc.get_state()
        source.insert(len(source), char)
        updates.append(doc.get_update(before))
    return updates


async def test_updates_of_pieces_yjs_cannot_merge_are_refused_past_the_limit(notebook, settings):
    """2.3 MB of such updates made 165,000 pieces, 28 bytes of memory per byte sent: 64 MiB,
    the size limit, would be a GB. The one that would take the document past
    MAX_DOCUMENT_PIECES is refused before it is applied: nothing of it is held, saved or sent."""
    settings.COLLAB = {**settings.COLLAB, "MAX_DOCUMENT_PIECES": 5_000}
    room = await get_room(str(notebook.pk))
    room.receive_update(typed_backwards(room, 2_000), None)
    room.receive_update(typed_backwards(room, 2_000), None)
    await room.flushed()
    state, size, seq = room.doc.get_state(), room.size, room.seq
    with pytest.raises(rooms.RoomError) as refused:
        room.receive_update(typed_backwards(room, 2_000), None)
    assert refused.value.code == 4413
    assert refused.value.reason == rooms.TOO_MANY_PIECES
    assert room.doc.get_state() == state
    assert (room.size, room._pending) == (size, [])
    await room.flushed()
    assert room.seq == seq
    await room.close()


async def test_a_reloaded_room_counts_the_pieces_its_document_holds(notebook, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_DOCUMENT_PIECES": 5_000}
    room = await get_room(str(notebook.pk))
    room.receive_update(typed_backwards(room, 2_000), None)
    room.receive_update(typed_backwards(room, 2_000), None)
    await room.close()
    room = await get_room(str(notebook.pk))
    assert room.pieces >= 4_000
    with pytest.raises(rooms.RoomError) as refused:
        room.receive_update(typed_backwards(room, 2_000), None)
    assert refused.value.code == 4413
    await room.close()


async def test_typing_is_not_limited_by_the_pieces(notebook, settings):
    """People type in a notebook for months: keystrokes that go on from the writer's previous
    character are merged by Yjs and count nothing, even in a document at the limit."""
    room = await get_room(str(notebook.pk))
    settings.COLLAB = {**settings.COLLAB, "MAX_DOCUMENT_PIECES": room.pieces + 1}
    keystrokes = typed_on(room, "print('hello, world')\n" * 30)
    for update in keystrokes:
        room.receive_update(update, None)
    await room.flushed()
    source = str(room.doc.get("cells", type=Array)[0]["source"])
    assert source.endswith("print('hello, world')\n" * 30)
    assert room.pieces <= settings.COLLAB["MAX_DOCUMENT_PIECES"]
    await room.close()


def embedded_on(room: rooms.Room, count: int) -> bytes:
    """One update putting `count` embeds at the end of the first cell, each after the last: every
    one names the one before as its origin, as typing does, but Yjs never merges embeds."""
    doc = ydoc.doc_from_updates(room.doc.get_update())
    before = doc.get_state()
    source = doc.get("cells", type=Array)[0]["source"]
    with doc.transaction():
        for _ in range(count):
            source.insert_embed(len(source), {"k": 1})
    return doc.get_update(before)


def every_other_deleted(room: rooms.Room, chars: int) -> tuple[bytes, bytes]:
    """A paste of `chars` characters at the end of the first cell (one item), then one update
    deleting every other one of them (each deletion splits the item): each its transaction's
    update, as the editor sends them."""
    doc = ydoc.doc_from_updates(room.doc.get_update())
    source = doc.get("cells", type=Array)[0]["source"]
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    start = len(source)
    source.insert(start, "x" * chars)
    with doc.transaction():
        for i in range(start + chars - 2, start - 1, -2):
            del source[i : i + 1]
    return updates[0], updates[1]


async def test_items_yjs_never_merges_count_though_each_names_the_one_before(notebook, settings):
    """An editor chained embeds each after the last: each named its writer's previous clock as
    its origin, as a keystroke does, and counted nothing: 300,000 of them (6 MB sent) grew a
    worker by 164 MB, 27 bytes per byte sent, past MAX_DOCUMENT_PIECES unrefused."""
    settings.COLLAB = {**settings.COLLAB, "MAX_DOCUMENT_PIECES": 5_000}
    room = await get_room(str(notebook.pk))
    room.receive_update(embedded_on(room, 2_000), None)
    room.receive_update(embedded_on(room, 2_000), None)
    await room.flushed()
    state = room.doc.get_state()
    with pytest.raises(rooms.RoomError) as refused:
        room.receive_update(embedded_on(room, 2_000), None)
    assert (refused.value.code, refused.value.reason) == (4413, rooms.TOO_MANY_PIECES)
    assert room.doc.get_state() == state
    await room.close()


async def test_deletions_that_split_items_count(notebook, settings):
    """Deleting every other character of one pasted item splits it into a piece per character:
    1.8 MB of such deletions grew a worker by 128 MB (71 bytes per byte sent) and counted
    nothing; 100,000 ranges in one update also held its event loop for seconds."""
    settings.COLLAB = {**settings.COLLAB, "MAX_DOCUMENT_PIECES": 5_000}
    room = await get_room(str(notebook.pk))
    for _ in range(2):
        paste, deletions = every_other_deleted(room, 2_000)
        room.receive_update(paste, None)
        room.receive_update(deletions, None)
    await room.flushed()
    paste, deletions = every_other_deleted(room, 2_000)
    room.receive_update(paste, None)
    with pytest.raises(rooms.RoomError) as refused:
        room.receive_update(deletions, None)
    assert refused.value.code == 4413
    await room.close()


async def test_a_step_2_carrying_old_deletions_counts_only_new_ones(notebook, settings):
    """A reconnecting editor's sync step 2 carries every deletion the document ever had: those
    count nothing, or each reconnect would bring a big notebook nearer the limit; its own new
    ones count."""
    room = await get_room(str(notebook.pk))
    paste, deletions = every_other_deleted(room, 2_000)
    room.receive_update(paste, None)
    room.receive_update(deletions, None)
    await room.flushed()
    settings.COLLAB = {**settings.COLLAB, "MAX_DOCUMENT_PIECES": room.pieces + 10}
    editor = ydoc.doc_from_updates(room.doc.get_update())
    before = editor.get_state()
    editor.get("cells", type=Array)[0]["source"].insert(0, "new ")
    step2 = editor.get_update(room.doc.get_state())  # what a client answers the room's step 1
    assert yupdate.delete_ranges(step2)  # the old deletions, again
    room.receive_update(step2, None, step2=True)
    assert room.doc.get_state() != before
    before = editor.get_state()
    editor.get("cells", type=Array)[0]["source"].insert(0, "and ")
    room.receive_update(editor.get_update(before), None)  # a diff: the old deletions again
    source = editor.get("cells", type=Array)[0]["source"]
    again = editor.get_state()
    with editor.transaction():
        for i in range(20, 0, -2):
            del source[i : i + 1]
    with pytest.raises(rooms.RoomError) as refused:
        room.receive_update(editor.get_update(room.doc.get_state()), None, step2=True)
    assert refused.value.code == 4413
    assert editor.get_state() == again
    await room.close()
