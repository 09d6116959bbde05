"""What the room reads from Yjs updates beyond what pycrdt offers."""

from __future__ import annotations

from pycrdt import get_update


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
