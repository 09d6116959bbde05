"""Cell ids with clients on two workers: each worker puts right the updates its own clients
send, so two changes that are each fine alone but repeat an id together (two people moving the
same cell at once, each on another worker) must still leave every cell with an id of its own."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pycrdt import Array, Map, Text

from notebooks import docschema
from tests.support.processes import Stack
from tests.support.waiting import eventually_async
from tests.support.yclient import open_client

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=True)
    yield stack
    stack.close()


def ids(client) -> list:
    return [c.get("id") if isinstance(c, Map) else None for c in docschema.cells(client.doc)]


def move_first_to_end(client) -> None:
    """As the editor moves a cell: delete it and insert a fresh copy with the same id."""
    cells = docschema.cells(client.doc)
    cell_id = cells[0]["id"]
    with client.doc.transaction():
        del cells[0]
        fields = {"cell_type": "code", "source": Text("moved"), "metadata": Map(), "outputs": Array()}
        cells.append(Map({"id": cell_id, **fields, "execution_count": None}))


async def test_one_cell_moved_at_once_on_two_workers_keeps_unique_ids(stack):
    alice = stack.user_with_notebook("ids-two-workers@example.com")
    nid, cookie = alice["notebook_id"], alice["cookie"]
    ports = [stack.start_worker(), stack.start_worker()]
    a, b = [await open_client(port, nid, cookie) for port in ports]
    with a.doc.transaction():  # three cells, for the moves to have somewhere to go
        for name in ("second", "third"):
            fields = {"cell_type": "code", "source": Text(name), "metadata": Map(), "outputs": Array()}
            a.cells.append(Map({"id": name, **fields, "execution_count": None}))
    await a.flush()
    await eventually_async(lambda: len(ids(b)) == 3, what="b to see three cells")
    move_first_to_end(a)
    move_first_to_end(b)
    await asyncio.gather(a.flush(), b.flush())  # each worker applies its own client's move first
    await eventually_async(lambda: ids(a) == ids(b) and len(ids(a)) == 4, what="the clients to converge")
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.get(f"http://127.0.0.1:{ports[0]}/n/{nid}/download", headers={"Cookie": cookie})
    downloaded = [c["id"] for c in reply.json()["cells"]]
    assert len(set(downloaded)) == len(downloaded) == 4, downloaded
    fresh = await open_client(ports[0], nid, cookie)
    await eventually_async(
        lambda: len(set(ids(fresh))) == len(ids(fresh)) == 4,
        timeout=5,
        what=f"unique ids in the live document (a fresh client reads {ids(fresh)})",
    )
    for client in (a, b, fresh):
        await client.ws.close()
