"""How many separate ranges one update may delete (`COLLAB_MAX_DELETE_RANGES_PER_UPDATE`): an
editor's update deleting 100,000 ranges (every other character of a paste, 0.4 MB) held a
worker's event loop for seconds, reading it and applying it. Driven through the real ASGI app."""

from __future__ import annotations

import random

import pytest
from channels.db import database_sync_to_async
from pycrdt import Array, Doc, Map, Text

from collab import protocol, yupdate
from collab.rooms import ROOMS
from notebooks.models import NotebookUpdate, Role
from tests.support.cast import cookie_for
from tests.support.consumer import close_all, connect, grant, joined
from tests.support.yclient import CommunicatorClient

pytestmark = pytest.mark.django_db(transaction=True)


def every_other_deleted(client_id: int, start: int, count: int) -> bytes:
    """An update of nothing but deletions: every other character of a paste of `client_id`'s
    from clock `start`, `count` ranges (what an editor would send only to split the paste)."""
    out = bytearray(b"\x00\x01") + protocol.write_var_uint(client_id) + protocol.write_var_uint(count)
    for i in range(count):
        out += protocol.write_var_uint(start + 2 * i) + b"\x01"
    return bytes(out)


def padded(client_id: int, clock: int, count: int) -> bytes:
    """An update deleting the same one character `count` times."""
    out = bytearray(b"\x00\x01") + protocol.write_var_uint(client_id) + protocol.write_var_uint(count)
    for _ in range(count):
        out += protocol.write_var_uint(clock) + b"\x01"
    return bytes(out)


def ranges(update: bytes) -> int:
    return sum(map(len, yupdate.delete_ranges(update).values()))


async def rows() -> int:
    return await database_sync_to_async(NotebookUpdate.objects.count)()


async def test_an_update_deleting_too_many_ranges_is_refused_before_it_is_applied(notebook, alice, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_DELETE_RANGES_PER_UPDATE": 1_000}
    a = await joined(notebook.pk, alice)
    watcher = await joined(notebook.pk, alice)
    a.text().insert(0, "x" * 4_000)
    await a.flush()
    await watcher.pump_until(lambda: len(watcher.source()) == 4_000, what="the paste")
    room = ROOMS[str(notebook.pk)]
    state, delete_set, saved = room.doc.get_state(), room.doc.get_update(room.doc.get_state()), await rows()
    start = protocol.parse_state_vector(a.doc.get_state())[a.doc.client_id] - 4_000
    await a.comm.send_to(bytes_data=protocol.sync_update(every_other_deleted(a.doc.client_id, start, 1_001)))
    closed = await a.wait_closed()
    assert closed["code"] == 4413
    assert "deletes text in too many places at once" in closed["reason"]
    assert room.doc.get_state() == state
    assert room.doc.get_update(room.doc.get_state()) == delete_set  # nothing of it deleted
    assert await rows() == saved
    await watcher.pump()
    assert watcher.source() == "x" * 4_000
    await close_all(a, watcher)


async def test_an_update_at_the_limit_is_taken(notebook, alice, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_DELETE_RANGES_PER_UPDATE": 1_000}
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "x" * 4_000)
    await a.flush()
    text = a.text()
    with a.doc.transaction():
        for i in range(1_998, -1, -2):
            del text[i : i + 1]
    assert ranges(a._outbox[-1]) == 1_000
    await a.flush()
    other = await joined(notebook.pk, alice)
    assert other.source() == a.source()
    assert a.closed is None
    await close_all(a, other)


def heavily_edited_notebook(cells: int) -> tuple[Doc, list[Doc]]:
    """A notebook of `cells` code cells typed by three people in turns, with typos put right,
    and run six times by the server (its outputs replaced each time): what an honest
    deletion of every cell deletes is broken into ranges by all those earlier deletions."""
    rng = random.Random(1)
    people = [Doc(client_id=1_000 + i) for i in range(3)]
    server = Doc(client_id=9_000)
    docs = [*people, server]

    def sync():
        for one in docs:
            for other in docs:
                if one is not other:
                    other.apply_update(one.get_update(other.get_state()))

    for k in range(cells):
        cell = {"id": f"c{k}", "cell_type": "code", "source": Text(), "outputs": Array(), "metadata": Map()}
        people[k % 3].get("cells", type=Array).append(Map({**cell, "execution_count": None}))
        if k % 50 == 49:
            sync()
    sync()
    for run in range(6):
        for k in range(cells):
            source = people[(k + run) % 3].get("cells", type=Array)[k]["source"]
            for _ in range(rng.randint(2, 8)):
                source.insert(len(source), rng.choice(["x = 1", "print(x)", "df.head()", "np.zeros(3)"]))
                if rng.random() < 0.3:  # a typo put right
                    del source[len(source) - 2 :]
        sync()
        with server.transaction():
            for k, cell in enumerate(server.get("cells", type=Array)):
                if len(cell["outputs"]):
                    del cell["outputs"][0 : len(cell["outputs"])]
                cell["outputs"].append(Map({"output_type": "stream", "name": "stdout", "text": f"{run}\n"}))
                cell["execution_count"] = run * cells + k
        sync()
    return server, people


async def test_deleting_every_cell_of_a_big_notebook_written_by_several_people_is_taken(
    notebook, alice, bob, settings
):
    """An honest deletion of many items in one transaction: a few ranges per cell."""
    await grant(notebook, bob, Role.EDITOR)
    server, _ = heavily_edited_notebook(800)
    a = await joined(notebook.pk, alice)
    a.cells.extend([Map({"id": "c", "cell_type": "code", "source": Text("x"), "metadata": Map()})])
    # The history as the people wrote it, then every cell deleted at once by bob.
    a.doc.apply_update(server.get_update())
    await a.flush()
    b = await joined(notebook.pk, bob)
    assert len(b.cells) == 802
    with b.doc.transaction():
        del b.cells[0 : len(b.cells)]
    deleted = ranges(b._outbox[-1])
    assert 6_000 < deleted < settings.COLLAB["MAX_DELETE_RANGES_PER_UPDATE"]  # ~10 ranges per cell
    await b.flush()
    await a.pump_until(lambda: len(a.cells) == 0, what="every cell deleted at alice's")
    assert (a.closed, b.closed) == (None, None)
    await close_all(a, b)


async def test_a_sync_step_2_repeating_more_old_deletions_than_the_limit_is_taken(notebook, alice, settings):
    """A reconnecting editor's step 2 carries the document's whole delete set, which may hold
    more ranges than one update may delete: only the ranges it deletes anew count."""
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "x" * 4_000)
    await a.flush()
    text = a.text()
    with a.doc.transaction():
        for i in range(3_998, -1, -2):
            del text[i : i + 1]
    await a.flush()
    await close_all(a)
    settings.COLLAB = {**settings.COLLAB, "MAX_DELETE_RANGES_PER_UPDATE": 100}
    watcher = await joined(notebook.pk, alice)
    assert watcher.source() == "x" * 2_000
    offline = Doc()
    offline.apply_update(watcher.doc.get_update())
    offline_text = offline.get("cells", type=Array)[0]["source"]
    with offline.transaction():  # deleted while away: 50 ranges anew
        for i in range(98, -1, -2):
            del offline_text[i : i + 1]
    step2 = offline.get_update(watcher.doc.get_state())
    assert ranges(step2) > 1_000  # the old ones come again
    # It reconnects: its answer to the room's sync step 1 is that step 2.
    connected, ok = await connect(notebook.pk, await database_sync_to_async(cookie_for)(alice))
    assert ok
    again = CommunicatorClient(connected.comm, offline)
    await again.start()
    await again.pump_until(again.synced.is_set, what="the first sync")
    await again.pump()  # the room's step 1, answered with the step 2
    await watcher.pump_until(lambda: len(watcher.source()) == 1_950, what="the step 2's deletions relayed")
    await again.pump()
    assert again.closed is None
    await close_all(again, watcher)


async def test_a_sync_step_2_deleting_too_many_ranges_anew_is_refused(notebook, alice, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_DELETE_RANGES_PER_UPDATE": 100}
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "x" * 4_000)
    await a.flush()
    await close_all(a)
    saved = await rows()
    again = await joined(notebook.pk, alice)
    start = protocol.parse_state_vector(a.doc.get_state())[a.doc.client_id] - 4_000
    await again.comm.send_to(bytes_data=protocol.sync_step2(every_other_deleted(a.doc.client_id, start, 101)))
    closed = await again.wait_closed()
    assert closed["code"] == 4413
    assert "deletes text in too many places at once" in closed["reason"]
    assert await rows() == saved
    await close_all(again)


async def test_a_sync_step_2_padded_with_old_deletions_is_refused(notebook, alice, settings):
    """Old deletions repeated cost reading and applying as new ones do: a step 2 may repeat
    the document's own ranges, not many more."""
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "x" * 400)
    await a.flush()
    text = a.text()
    with a.doc.transaction():
        for i in range(398, -1, -2):
            del text[i : i + 1]
    await a.flush()
    await close_all(a)
    settings.COLLAB = {**settings.COLLAB, "MAX_DELETE_RANGES_PER_UPDATE": 100}
    again = await joined(notebook.pk, alice)
    start = protocol.parse_state_vector(a.doc.get_state())[a.doc.client_id] - 400
    # The first old deletion, again and again
    await again.comm.send_to(bytes_data=protocol.sync_step2(padded(a.doc.client_id, start + 398, 5_000)))
    closed = await again.wait_closed()
    assert closed["code"] == 4413
    await close_all(again)


async def test_a_viewers_update_of_many_old_deletions_is_answered_at_once(notebook, alice, bob, settings):
    """A viewer's update is only checked for being a repeat of what the document has (to tell
    them they cannot edit): that check was quadratic in the ranges. One repeating far more
    ranges than the document holds is not a repeat."""
    await grant(notebook, bob, Role.VIEWER)
    settings.COLLAB = {**settings.COLLAB, "MAX_DELETE_RANGES_PER_UPDATE": 100}
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "x" * 400)
    await a.flush()
    text = a.text()
    with a.doc.transaction():
        for i in range(398, -1, -2):
            del text[i : i + 1]
    await a.flush()
    b = await joined(notebook.pk, bob)
    start = protocol.parse_state_vector(a.doc.get_state())[a.doc.client_id] - 400
    await b.comm.send_to(bytes_data=protocol.sync_update(padded(a.doc.client_id, start + 398, 20_000)))
    await b.pump_until(lambda: b.denied, what="the viewer told")  # far more than a repeat holds
    assert b.closed is None
    await close_all(a, b)


async def test_an_update_after_the_step_2_repeating_old_deletions_counts_them(notebook, alice, settings):
    """Only a socket's sync step 2 carries the document's deletions again (Yjs's own updates
    hold only what their transaction deleted): an editor repeating every old range in each of
    their updates, with one new range each, held a worker's loop about 0.3 s an update for as
    long as they liked (100,000 old ranges, 0.4 MB an update; /healthz answered after 1.5 s)."""
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "x" * 400)
    await a.flush()
    text = a.text()
    with a.doc.transaction():
        for i in range(398, -1, -2):
            del text[i : i + 1]
    await a.flush()
    await close_all(a)
    settings.COLLAB = {**settings.COLLAB, "MAX_DELETE_RANGES_PER_UPDATE": 100}
    again = await joined(notebook.pk, alice)
    assert len(again.source()) == 200
    start = protocol.parse_state_vector(a.doc.get_state())[a.doc.client_id] - 400
    old = every_other_deleted(a.doc.client_id, start, 200)  # the document's own 200 ranges
    update = bytearray(old)
    update[-1] = 2  # the last range two characters long: it deletes one anew
    assert ranges(bytes(update)) == 200
    await again.comm.send_to(bytes_data=protocol.sync_update(bytes(update)))
    closed = await again.wait_closed()
    assert closed["code"] == 4413
    assert "deletes text in too many places at once" in closed["reason"]
    await close_all(again)
