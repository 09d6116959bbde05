"""What a Yjs update (v1 encoding) deletes, and a state vector as numbers: the two facts the room
reads from updates beyond what pycrdt offers."""

from __future__ import annotations

from pycrdt import get_update

EMPTY_STATE = b"\x00"  # a state vector naming no writer


def _var_uint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def state_vector(state: bytes) -> dict[int, int]:
    """Client id -> the clock of its next item, from an encoded state vector."""
    count, pos = _var_uint(state, 0)
    clocks = {}
    for _ in range(count):
        client, pos = _var_uint(state, pos)
        clocks[client], pos = _var_uint(state, pos)
    return clocks


def as_read(update: bytes) -> bytes:
    """The update as pycrdt reads it, encoded again: what the room applies, saves and relays.
    pycrdt reads clocks and lengths as 32-bit numbers and Yjs (in browsers) as 53-bit ones: a
    client's deletion of 2^32 items from clock 0 is a deletion of nothing to the room, and to
    every browser a deletion of all that writer's items, and of those to come. Raises
    ValueError for what pycrdt cannot read."""
    return get_update(update, EMPTY_STATE)


def left_out(update: bytes, state: bytes) -> str | None:
    """What of the update a document of this state vector (read after applying it) lacks: "items"
    (it holds items the document has not integrated: see `not_all_in`), "deletions
    ahead" (it deletes items the document does not have yet; Yjs keeps such a deletion and
    applies it to them when they come, so a client could delete the server's or another
    editor's changes to come, and the update log would keep that), or None."""
    rest = get_update(update, state)  # its items the state lacks, then its whole delete set
    clients, pos = _var_uint(rest, 0)
    if clients:
        return "items"
    count, pos = _var_uint(rest, pos)
    clocks = None
    for _ in range(count):
        client, pos = _var_uint(rest, pos)
        runs, pos = _var_uint(rest, pos)
        for _ in range(runs):
            clock, pos = _var_uint(rest, pos)
            length, pos = _var_uint(rest, pos)
            clocks = state_vector(state) if clocks is None else clocks
            if clock + length > clocks.get(client, 0):
                return "deletions ahead"
    return None


def not_all_in(update: bytes, state: bytes) -> bool:
    """Whether the update holds items a document of this state vector has not integrated (its
    diff against the state names at least one client; deletions always come along).

    pycrdt 0.14.13 keeps aside an update that came before one it follows, and shows part of it
    in the document at once without counting it: yrs then takes those items for new ones in
    later transactions, raises no events for their changes (the schema repair never sees
    them) and frees them on deletion while observers still hold them (reading one hung or
    crashed the worker); once the missing update comes, part of it may stay out for good
    (Yjs integrates all of it). A client update that waits makes the room reload
    (`Room.restart`); another worker's is applied again once the hole it is beyond is filled
    (`_apply_early_again`)."""
    return get_update(update, state)[0] != 0
