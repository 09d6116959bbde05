"""Whose each Yjs client id of a notebook's document is (`WriterClaim`): the first person to
show presence or write under it keeps it, and a room claims the id it writes its own changes
under when it loads. Synchronous ORM code; the room calls it through `database_sync_to_async`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from notebooks.models import WriterClaim

ROOM = "room"  # the holder of a room's own client id (people's keys start "u:" or "g:")
CLIENT_MAX = 2**53 - 1  # the largest client id a browser's Yjs can write under (a JS number)


def claim(notebook_id, clients: Iterable[int], person: str, aliases: Iterable[str] = ()) -> dict[int, str]:
    """Claim each client id for `person` where nobody holds it yet, or one of `aliases` (who the
    person was before: the guest of their session, until they signed in); return every one's
    holder (`person`, or whoever held it first). Two workers claiming one id at once: one
    insert wins."""
    clients = sorted(set(clients))
    if not clients:
        return {}
    rows = [WriterClaim(notebook_id=notebook_id, client=client, person=person) for client in clients]
    WriterClaim.objects.bulk_create(rows, ignore_conflicts=True)
    held = WriterClaim.objects.filter(notebook_id=notebook_id, client__in=clients)
    if aliases := list(aliases):
        held.filter(person__in=aliases).update(person=person)
    return dict(held.values_list("client", "person"))


def room_client(notebook_id) -> int:
    """A fresh client id for a room's own changes, claimed for rooms."""
    while True:
        client = secrets.randbits(53)
        if claim(notebook_id, [client], ROOM).get(client) == ROOM:
            return client
