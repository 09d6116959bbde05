"""Whose each Yjs client id of a notebook's document is (`WriterClaim`): the first person to
show presence or write under it keeps it, and a room claims the id it writes its own changes
under when it loads. Synchronous ORM code; the room calls it through `database_sync_to_async`.

Rows are bounded. An id the document holds items under is its writer's for good (anyone else
writing at its next clock would take an edit away from everyone, and an offline page coming back
with it would lose its own); those are bounded by the document itself, whose state vector names
each. An id that only showed presence is not: every page load is a new one. So a person holds at
most `cap` ids without content in a notebook (`claim`: past it the oldest not in use is
released, or, all in use, the new one refused), an id without content unused for a while is
released (`prune`), and a room releases its own id if it wrote nothing (`release`).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable
from datetime import datetime

from django.utils import timezone

from notebooks.models import WriterClaim

ROOM = "room"  # the holder of a room's own client id (people's keys start "u:" or "g:")
CLIENT_MAX = 2**53 - 1  # the largest client id a browser's Yjs can write under (a JS number)
CHUNK = 500  # client ids per `IN (...)`: SQLite takes a bounded number of parameters


class TooMany(Exception):
    """The person holds as many ids without content in this notebook as they may, all in use."""


def claim(
    notebook_id,
    clients: Iterable[int],
    person: str,
    aliases: Iterable[str] = (),
    *,
    written: Collection[int] = (),
    in_use: Collection[int] = (),
    cap: int | None = None,
    unused_before: datetime | None = None,
) -> dict[int, str]:
    """Claim each client id for `person` where nobody holds it yet, or one of `aliases` (who the
    person was before: the guest of their session, until they signed in); return every one's
    holder (`person`, or whoever held it first). Two workers claiming one id at once: one
    insert wins.

    `written`: the ids the document holds items under (its state vector), `in_use`: those a
    socket shows presence with now. With `cap`, the person holds at most that many ids without
    content once these are claimed: the oldest not in use are released, or `TooMany` is raised
    and nothing claimed. With `unused_before`, the notebook's ids without content not claimed
    since then and not in use are released first (`prune`)."""
    clients = sorted(set(clients))
    if not clients:
        return {}
    if unused_before is not None:
        prune(notebook_id, written, in_use, unused_before)
    if cap is not None:
        _make_way(notebook_id, clients, person, written, in_use, cap)
    now = timezone.now()
    rows = [
        WriterClaim(notebook_id=notebook_id, client=client, person=person, seen_at=now) for client in clients
    ]
    WriterClaim.objects.bulk_create(rows, ignore_conflicts=True)
    held = WriterClaim.objects.filter(notebook_id=notebook_id, client__in=clients)
    held.filter(person__in=[person, *aliases]).update(person=person, seen_at=now)
    return dict(held.values_list("client", "person"))


def _make_way(
    notebook_id, clients: list[int], person: str, written: Collection[int], in_use: Collection[int], cap: int
) -> None:
    """Release the person's oldest ids without content that are not in use, so that with the new
    ones among `clients` they hold at most `cap`; raise `TooMany` if those in use are too many.
    Ids found to have content are marked so, and count no more. Two claims at once may pass the
    cap together, by as many as run at once."""
    taken = set(
        WriterClaim.objects.filter(notebook_id=notebook_id, client__in=clients).values_list(
            "client", flat=True
        )
    )
    new = [client for client in clients if client not in taken]
    if not new:
        return
    idle = list(
        WriterClaim.objects.filter(notebook_id=notebook_id, person=person, has_content=False)
        .order_by("seen_at", "pk")
        .values_list("client", flat=True)
    )
    _mark_content(notebook_id, [client for client in idle if client in written])
    idle = [client for client in idle if client not in written and client not in clients]
    excess = len(idle) + len(new) - cap
    if excess <= 0:
        return
    free = [client for client in idle if client not in in_use][:excess]
    if len(free) < excess:
        raise TooMany(f"{person} holds {len(idle)} client ids without content in {notebook_id}, all in use")
    _delete(notebook_id, free, person=person)


def prune(notebook_id, written: Collection[int], in_use: Collection[int], unused_before: datetime) -> int:
    """Release the notebook's ids without content (people's, not rooms') not claimed since
    `unused_before` and not in use; return how many. A page that comes back with one claims it
    again at its presence or its first edit."""
    old = list(
        WriterClaim.objects.filter(notebook_id=notebook_id, has_content=False, seen_at__lt=unused_before)
        .exclude(person=ROOM)
        .values_list("client", flat=True)
    )
    _mark_content(notebook_id, [client for client in old if client in written])
    gone = [client for client in old if client not in written and client not in in_use]
    return _delete(notebook_id, gone, seen_at__lt=unused_before)


def release(notebook_id, client: int, person: str) -> int:
    """Give up `person`'s claim of an id the document holds nothing under (a room that unloads
    without having written)."""
    return _delete(notebook_id, [client], person=person)


def _mark_content(notebook_id, clients: list[int]) -> None:
    for start in range(0, len(clients), CHUNK):
        chunk = clients[start : start + CHUNK]
        WriterClaim.objects.filter(notebook_id=notebook_id, client__in=chunk).update(has_content=True)


def _delete(notebook_id, clients: list[int], **where) -> int:
    removed = 0
    for start in range(0, len(clients), CHUNK):
        chunk = clients[start : start + CHUNK]
        rows = WriterClaim.objects.filter(
            notebook_id=notebook_id, client__in=chunk, has_content=False, **where
        )
        removed += rows.delete()[0]
    return removed


def room_client(notebook_id) -> int:
    """A fresh client id for a room's own changes, claimed for rooms."""
    while True:
        client = secrets.randbits(53)
        if claim(notebook_id, [client], ROOM).get(client) == ROOM:
            return client
