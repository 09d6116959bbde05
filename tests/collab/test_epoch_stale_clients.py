"""A document replaced by its owner stays replaced: a client still holding the old document
(a tab left open, a stock y-websocket client, edits kept offline) must not merge it back into
the new one when it reconnects, whether or not it names the epoch it belongs to."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from collab.rooms import ROOMS
from notebooks import actions, docschema
from notebooks.access import Action, access_notebook, principal_from_session
from tests.support.cast import cookie_for
from tests.support.consumer import close_all, connect, joined
from tests.support.kernels import add_code_cell
from tests.support.yclient import CommunicatorClient

pytestmark = pytest.mark.django_db(transaction=True)

NEW = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {},
    "cells": [{"cell_type": "markdown", "id": "clean", "metadata": {}, "source": "the clean version"}],
}


def replace(notebook, owner) -> None:
    access = access_notebook(principal_from_session(owner, None), notebook.pk, Action.OWN)
    actions.replace_content(access, "clean.ipynb", json.dumps(NEW).encode())


def stored_sources(notebook_id) -> list[str]:
    return [cell.source for cell in actions.current_notebook(notebook_id).cells]


@pytest.mark.parametrize("query", ["", "ext=1"])
async def test_a_client_without_an_epoch_cannot_bring_a_replaced_document_back(notebook, alice, query):
    old = await joined(notebook.pk, alice, query=query)
    add_code_cell(old, "leak", "API_KEY = 'sk-live-123'")
    await old.flush()
    await old.pump()
    await database_sync_to_async(replace)(notebook, alice)
    await old.wait_closed()
    assert old.closed["code"] == 4409

    # The same document reconnects the way a stock WebsocketProvider does: no epoch.
    cookie = await database_sync_to_async(cookie_for)(alice)
    comm_client, _ = await connect(notebook.pk, cookie, query)
    stale = CommunicatorClient(comm_client.comm, doc=old.doc)
    await stale.start()
    await stale.pump()
    # Frames are handled in order: once the presence query is answered, the stale
    # client's sync step 2 (its whole old document) has been handled too.
    await stale.comm.send_to(bytes_data=bytes([3]))
    await stale.pump()
    if stale.closed is None:
        await close_all(stale)

    sources = await database_sync_to_async(stored_sources)(notebook.pk)
    assert sources == ["the clean version"], sources


async def test_a_client_without_an_epoch_has_its_early_updates_wait_for_its_sync_step_1(notebook, alice):
    """Its state vector shows which epoch its document is of: updates before it wait (a few at
    most, then 4400), and a stale document's answer to our step 1 sent before its own step 1
    is dropped with the 4409 that step 1 gets."""
    from collab import consumers, protocol

    old = await joined(notebook.pk, alice)
    add_code_cell(old, "leak", "API_KEY = 'sk-live-123'")
    await old.flush()
    await old.pump()
    await database_sync_to_async(replace)(notebook, alice)
    await old.wait_closed()

    cookie = await database_sync_to_async(cookie_for)(alice)
    stale, _ = await connect(notebook.pk, cookie)
    await stale.comm.send_to(bytes_data=protocol.sync_step2(old.doc.get_update()))  # before its step 1
    await stale.comm.send_to(bytes_data=protocol.sync_step1(old.doc.get_state()))
    await stale.wait_closed()
    assert stale.closed["code"] == 4409
    assert await database_sync_to_async(stored_sources)(notebook.pk) == ["the clean version"]

    flood, _ = await connect(notebook.pk, cookie)
    for _ in range(consumers.EARLY_UPDATES_MAX + 1):
        await flood.comm.send_to(bytes_data=protocol.sync_update(old.doc.get_update()))
    await flood.wait_closed()
    assert flood.closed["code"] == 4400
    assert await database_sync_to_async(stored_sources)(notebook.pk) == ["the clean version"]


async def test_a_client_without_an_epoch_may_answer_our_sync_step_1_before_sending_its_own(notebook, alice):
    """A new client that answers the server's step 1 first (its empty step 2), then sends its
    own step 1 and edits, as generic y-websocket clients may: every step is accepted."""
    from pycrdt import Doc

    from collab import protocol

    cookie = await database_sync_to_async(cookie_for)(alice)
    client, _ = await connect(notebook.pk, cookie)
    fresh = Doc()
    await client.comm.send_to(bytes_data=protocol.sync_step2(fresh.get_update(b"\x00")))
    stale = CommunicatorClient(client.comm, doc=fresh)
    await stale.start()
    await stale.pump()
    add_code_cell(stale, "new", "written by a client that named no epoch")
    await stale.flush()
    await stale.pump()
    assert stale.closed is None
    await close_all(stale)
    assert "written by a client that named no epoch" in await database_sync_to_async(stored_sources)(
        notebook.pk
    )


async def test_a_client_without_an_epoch_whose_own_edits_were_never_saved_is_not_told_replaced(
    notebook, alice
):
    """A document of this epoch whose own writer never reached the database (its edits refused,
    or lost with a worker) still holds this epoch's writers: it is welcome, and what it sends
    once synced is kept."""
    first = await joined(notebook.pk, alice)
    add_code_cell(first, "unsent", "typed while the connection was away")  # never sent
    await close_all(first)
    cookie = await database_sync_to_async(cookie_for)(alice)
    comm_client, _ = await connect(notebook.pk, cookie)
    again = CommunicatorClient(comm_client.comm, doc=first.doc)
    await again.start()
    await again.pump()
    await again.flush()
    await again.pump()
    assert again.closed is None
    await close_all(again)
    assert "typed while the connection was away" in await database_sync_to_async(stored_sources)(notebook.pk)


async def test_early_updates_hold_at_most_one_message_s_worth_and_none_from_a_viewer(
    notebook, alice, bob, settings
):
    """What waits for a client's sync step 1 is bounded in bytes (the largest message the
    server takes), and a viewer's updates, which could never be applied, do not wait at all."""
    from collab import protocol
    from notebooks.models import Role
    from tests.support.consumer import grant

    settings.COLLAB = {**settings.COLLAB, "MAX_MESSAGE_BYTES": 10_000}
    await grant(notebook, bob, Role.VIEWER)
    viewer_cookie = await database_sync_to_async(cookie_for)(bob)
    viewer, _ = await connect(notebook.pk, viewer_cookie)
    other = await joined(notebook.pk, alice, query=f"epoch={notebook.epoch}")
    add_code_cell(other, "v", "a viewer's change")
    await viewer.comm.send_to(bytes_data=protocol.sync_update(other.doc.get_update()))
    await viewer.pump_until(lambda: viewer.denied, what="the viewer to be told at once")

    cookie = await database_sync_to_async(cookie_for)(alice)
    editor, _ = await connect(notebook.pk, cookie)
    for i in range(3):  # 3 x 4,000 bytes: more than one message's worth
        add_code_cell(other, f"big{i}", "x" * 4_000)
        await editor.comm.send_to(bytes_data=protocol.sync_update(other.doc.get_update()))
    await editor.wait_closed()
    assert editor.closed["code"] == 4400
    await close_all(viewer, other)


async def test_a_sync_step_1_far_larger_than_the_documents_state_vector_is_refused(notebook, alice):
    """Reading a state vector of millions of writers holds the worker for seconds: one much
    larger than the document's own is refused (4400) before it is read."""
    from collab import protocol

    cookie = await database_sync_to_async(cookie_for)(alice)
    client, _ = await connect(notebook.pk, cookie, query=f"epoch={notebook.epoch}")
    entries = 20_000
    vector = protocol.write_var_uint(entries) + b"".join(
        protocol.write_var_uint(2**40 + i) + protocol.write_var_uint(1) for i in range(entries)
    )
    await client.comm.send_to(bytes_data=protocol.sync_step1(vector))
    await client.wait_closed()
    assert client.closed["code"] == 4400


async def test_a_room_that_missed_the_replacement_does_not_merge_the_new_document_into_the_old(
    notebook, alice
):
    """A room behind the log (a lost fan-out message) that also missed the "replaced" message
    repairs its gap from the database: the snapshot it reads there is the new epoch's document.
    Merged into the old one and relayed, it would show every editor both documents at once."""
    a = await joined(notebook.pk, alice)
    room = ROOMS[str(notebook.pk)]
    heard = room.on_fanout

    async def missing_the_replacement(event):
        if event["type"] != "replaced":
            await heard(event)

    room.on_fanout = missing_the_replacement
    await database_sync_to_async(replace)(notebook, alice)
    room.seq -= 1  # it missed its own last update's message
    await room.repair()
    await a.pump()
    ids = [str(c.get("id")) for c in docschema.cells(a.doc)]
    assert a.closed is not None or "clean" not in ids, ids
    await close_all(a)
