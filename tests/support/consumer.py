"""Clients of the websocket consumer driven through the real ASGI application in-process
(channels' `WebsocketCommunicator`), signed in as one of the cast."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from collab.protocol import parse_state_vector
from collab.rooms import ROOMS
from config.asgi import application
from notebooks.models import Grant, Role
from tests.support.cast import cookie_for
from tests.support.waiting import eventually_async
from tests.support.yclient import CommunicatorClient

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


async def connect(notebook_id, cookie: str | None, query: str = "", origin=ORIGIN):
    headers = [origin] if origin else []
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    path = f"/ws/notebooks/{notebook_id}" + (f"?{query}" if query else "")
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect()
    client = CommunicatorClient(comm)
    return client, connected


async def joined(notebook_id, user, query: str = "") -> CommunicatorClient:
    cookie = await database_sync_to_async(cookie_for)(user)
    client, connected = await connect(notebook_id, cookie, query)
    assert connected
    await client.start()
    await client.pump_until(client.synced.is_set, what="the first sync")
    await client.pump()
    return client


async def flushed(client: CommunicatorClient) -> None:
    """Send the client's edits and handle frames until its notebook's room holds them, as the
    editor waits for its edits to be saved (`whenSaved`) before it runs a cell: a run posted
    earlier may find the cell's old source, or no cell at all."""
    await client.flush()
    notebook_id = client.comm.scope["path"].rsplit("/", 1)[-1]
    mine = client.doc.client_id
    wanted = parse_state_vector(client.doc.get_state()).get(mine, 0)

    def held() -> bool:
        room = ROOMS.get(notebook_id)
        return room is not None and parse_state_vector(room.doc.get_state()).get(mine, 0) >= wanted

    await client.pump_until(held, what="the room to hold the client's edits")


async def close_all(*clients) -> None:
    """Disconnect the clients and wait until their notebooks' rooms, if nobody else is in them,
    have unloaded (written what they held and left the fan-out)."""
    notebook_ids = set()
    for client in clients:
        notebook_ids.add(client.comm.scope["path"].rsplit("/", 1)[-1])
        await client.comm.disconnect()

    def unloaded() -> bool:
        rooms = [ROOMS.get(nid) for nid in notebook_ids]
        return all(room is None or room.sockets or room.holders > 0 for room in rooms)

    await eventually_async(unloaded, what=f"the rooms of {sorted(notebook_ids)} to unload")


async def grant(notebook, user, role: Role) -> None:
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=user, role=role)
