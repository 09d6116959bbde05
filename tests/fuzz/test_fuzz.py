"""Fuzzing, bounded for CI (FUZZ_EXAMPLES=2000 for a longer run): random and mutated
y-websocket frames against the real consumer, and random files against the importer.
A bad frame closes only its own socket, with 4400 or 4413; the room stays usable and its
document readable; a bad file is refused with a NotebookFileError."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from channels.db import database_sync_to_async
from django.db import connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from collab import protocol
from collab.rooms import ROOMS
from notebooks import nbio, ydoc
from tests.support.cast import cookie_for
from tests.support.consumer import close_all, connect, flushed
from tests.support.waiting import eventually_async

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def real_update() -> bytes:
    doc = Doc()
    doc["t"] = Text("hello 😀")
    return doc.get_update()


def mutate(data: bytes, where: int, byte: int, cut: int) -> bytes:
    data = bytearray(data)
    if data:
        data[where % len(data)] = byte
    return bytes(data[: max(0, len(data) - cut)])


raw = st.binary(max_size=64)
mutated_update = st.builds(
    mutate, st.just(real_update()), st.integers(0, 200), st.integers(0, 255), st.integers(0, 8)
)
awareness_entry = st.tuples(
    st.integers(0, 2**53), st.integers(0, 2**32), st.one_of(st.just("null"), st.text(max_size=40))
)
frames = st.one_of(
    st.binary(min_size=1, max_size=64),  # a websocket frame is never empty here
    st.builds(protocol.sync_step1, raw),
    st.builds(protocol.sync_step2, st.one_of(raw, mutated_update)),
    st.builds(protocol.sync_update, st.one_of(raw, mutated_update)),
    st.builds(protocol.awareness, raw),
    st.builds(
        lambda e: protocol.awareness(protocol.encode_awareness(e)), st.lists(awareness_entry, max_size=3)
    ),
    st.builds(
        lambda t: bytes([protocol.MessageType.COMMAND]) + protocol.write_string(t), st.text(max_size=40)
    ),
    st.builds(lambda b: bytes([3]) + b, raw),
)


@pytest.fixture
def loop():
    """One event loop for all examples of a test: rooms and their tasks live across examples."""
    loop = asyncio.new_event_loop()
    earlier = set(ROOMS)  # rooms another test left behind are not this one's to wait for
    yield loop
    loop.run_until_complete(eventually_async(lambda: not set(ROOMS) - earlier, what="the rooms to unload"))
    # the ORM thread of this loop keeps a connection: close it, or the test database stays in use
    loop.run_until_complete(database_sync_to_async(connections.close_all)())
    loop.close()


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(st.lists(frames, min_size=1, max_size=4))
def test_random_frames_close_only_their_socket_with_4400_or_4413(notebook, alice, loop, batch):
    async def scenario():
        cookie = await database_sync_to_async(cookie_for)(alice)
        witness, connected = await connect(notebook.pk, cookie)
        assert connected
        await witness.start()
        await witness.pump_until(witness.synced.is_set, what="the witness's first sync")
        fuzzed, connected = await connect(notebook.pk, cookie)
        assert connected
        await fuzzed.start()
        for frame in batch:
            await fuzzed.comm.send_to(bytes_data=frame)
            await fuzzed.pump(0.02)
            if fuzzed.closed is not None:
                break
        if fuzzed.closed is None:
            await fuzzed.pump(0.05)
        if fuzzed.closed is not None:
            assert fuzzed.closed["code"] in (4400, 4413), fuzzed.closed
        else:
            await fuzzed.comm.disconnect()
        room = ROOMS[str(notebook.pk)]
        assert fuzzed not in room.sockets
        ydoc.read_notebook(room.doc)  # still a notebook
        witness.text().insert(0, "x")
        await flushed(witness)  # the room takes its edit (and closing it fails this)
        await witness.pump(0.02)
        assert witness.closed is None
        await close_all(witness)

    loop.run_until_complete(scenario())


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)
cell = st.fixed_dictionaries(
    {
        "cell_type": st.sampled_from(["code", "markdown", "raw", "x"]),
        "source": json_values,
        "metadata": json_values,
    },
    optional={
        "id": st.text(max_size=70),
        "outputs": st.lists(json_values, max_size=3),
        "execution_count": json_values,
    },
)
notebook_like = st.fixed_dictionaries(
    {"nbformat": st.sampled_from([4, 4, 3, 5, "4"]), "nbformat_minor": st.integers(-1, 6)},
    optional={"cells": st.lists(cell, max_size=5), "metadata": json_values, "worksheets": json_values},
)


@FUZZ
@given(
    st.one_of(
        raw,
        notebook_like.map(lambda nb: json.dumps(nb).encode()),
        json_values.map(json.dumps).map(str.encode),
    )
)
def test_the_importer_reads_or_refuses_anything(data):
    try:
        nb = nbio.read_ipynb(data, 1 << 20, max_cells=100, max_depth=20)
    except nbio.NotebookFileError:
        return
    doc = ydoc.doc_from_updates(ydoc.notebook_to_update(nb))
    assert len(ydoc.read_notebook(doc).cells) == len(nb.cells)
