"""Access taken away on one worker while another worker's room loads for the person's join: the
room subscribes to the notebook's change notices only once loaded (seconds for a big notebook),
so it never hears of the change; it reads the notebook's count of sharing changes instead
(`Notebook.access_version`) and checks again a join whose access check read a smaller one.
The periodic re-check is set to a minute here: only that can close the socket in time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time

import httpx
import pytest
import websockets

from tests.support.http import owner_client, post
from tests.support.processes import Stack
from tests.support.waiting import eventually_async
from tests.support.yclient import WsClient, connect, open_client

pytestmark = pytest.mark.processes

CELLS = 4000
RECHECK = {"COLLAB_ACCESS_RECHECK_INTERVAL": "60", "COLLAB_ROOM_UNLOAD_DELAY": "0.2"}


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=True)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def big_ipynb(tmp_path_factory) -> str:
    """A notebook whose room takes about a second to load."""
    line = "x = [i * i for i in range(100)]  # " + "a" * 60 + "\n"
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": line * 3}
        for _ in range(CELLS)
    ]
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path_factory.mktemp("big") / "big.ipynb"
    path.write_text(json.dumps(notebook))
    return str(path)


async def _join_while(port: int, nb: str, cookie: str, change) -> tuple[WsClient, float, bool]:
    """Join, and make `change` once the join is under way (its access checked, the room
    loading); the socket, how long the change took, and whether the room had answered the join
    (its sync step 1) before the change was made."""
    ws = WsClient(await connect(port, nb, cookie))  # accepted at once: then access, then the room
    await ws.start()
    await asyncio.sleep(0.15)  # into the join's access check and the room's load
    answered_before = ws.received > 0
    started = time.monotonic()
    await asyncio.to_thread(change)
    return ws, time.monotonic() - started, answered_before


async def _closed_within(ws: WsClient, timeout: float) -> float | None:
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(ws.reader), timeout)
        return time.monotonic() - started
    return None


async def test_a_grant_removed_on_one_worker_while_the_other_loads_the_room_closes_the_joiner(
    stack, big_ipynb
):
    alice = stack.user_with_notebook("alice-load@example.com", ipynb=big_ipynb, title="Big")
    bob = stack.user_with_notebook("bob-load@example.com", notebook=None)
    nb = alice["notebook_id"]
    grant_id = stack.call("share_with", nb, "bob-load@example.com", "editor")["grant_id"]
    a_port, b_port = stack.start_worker(**RECHECK), stack.start_worker(**RECHECK)
    owner = owner_client(b_port, alice["cookie"])

    def remove():
        assert (
            post(owner, f"/n/{nb}/share", {"action": "remove_grant", "grant_id": grant_id}).status_code == 302
        )

    ws, took, answered = await _join_while(a_port, nb, bob["cookie"], remove)
    closed = await _closed_within(ws, 10)
    print(f"{CELLS} cells: removed in {took * 1000:.0f} ms (answered before: {answered}), closed in {closed}")
    assert not answered, "the room loaded before the change: make the notebook bigger"
    assert closed is not None, "the socket stayed open after its grant was removed"
    assert ws.ws.close_code == 4403


async def test_a_link_revoked_while_a_guest_joins_a_cold_room_on_another_worker_closes_the_guest(
    stack, big_ipynb
):
    alice = stack.user_with_notebook("alice-load-link@example.com", ipynb=big_ipynb, title="Big")
    nb = alice["notebook_id"]
    a_port, b_port = stack.start_worker(**RECHECK), stack.start_worker(**RECHECK)
    owner = owner_client(b_port, alice["cookie"])
    post(owner, f"/n/{nb}/share", {"action": "create_link", "label": "Open", "role": "editor"})
    page = owner.get(f"/n/{nb}/share").text
    token = re.search(r"/s/([\w-]+)</code>", page).group(1)
    link_id = re.search(r'name="link_id" value="(\d+)"', page).group(1)
    guest = httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=20)
    assert guest.get(f"/s/{token}").status_code == 302
    cookie = f"sessionid={guest.cookies['sessionid']}"

    def revoke():
        assert post(owner, f"/n/{nb}/share", {"action": "revoke_link", "link_id": link_id}).status_code == 302

    ws, took, answered = await _join_while(a_port, nb, cookie, revoke)
    closed = await _closed_within(ws, 10)
    print(
        f"link revoked in {took * 1000:.0f} ms (room answered before: {answered}), guest closed in {closed}"
    )
    assert not answered
    assert closed is not None, "the guest's socket stayed open after the link was revoked"
    assert ws.ws.close_code == 4401


async def test_several_changes_while_the_room_loads_leave_the_joiner_as_the_last_one_says(stack, big_ipynb):
    """Removed, given back, removed again: closed. Made a viewer, then an editor who may run:
    open, and told so (its edit saved)."""
    alice = stack.user_with_notebook("alice-load-many@example.com", ipynb=big_ipynb, title="Big")
    bob = stack.user_with_notebook("bob-load-many@example.com", notebook=None)
    carol = stack.user_with_notebook("carol-load-many@example.com", notebook=None)
    nb = alice["notebook_id"]
    a_port, b_port = stack.start_worker(**RECHECK), stack.start_worker(**RECHECK)
    owner = owner_client(b_port, alice["cookie"])
    carols = stack.call("share_with", nb, "carol-load-many@example.com", "editor")["grant_id"]
    bobs = stack.call("share_with", nb, "bob-load-many@example.com", "editor")["grant_id"]

    def remove_give_back_remove():
        for grant_id in (bobs, None, "again"):
            if grant_id is None:
                stack.call("share_with", nb, "bob-load-many@example.com", "editor")
                continue
            if grant_id == "again":
                page = owner.get(f"/n/{nb}/share").text
                ids = re.findall(r'name="grant_id" value="(\d+)"', page)
                grant_id = max(int(i) for i in ids)
            post(owner, f"/n/{nb}/share", {"action": "remove_grant", "grant_id": grant_id})
        for role in ("viewer", "runner"):
            post(owner, f"/n/{nb}/share", {"action": "change_role", "grant_id": carols, "role": role})

    async def join_both():
        first = WsClient(await connect(a_port, nb, bob["cookie"]))
        second = WsClient(
            await websockets.connect(
                f"ws://127.0.0.1:{a_port}/ws/notebooks/{nb}?ext=1",
                additional_headers={"Cookie": carol["cookie"], "Origin": f"http://127.0.0.1:{a_port}"},
                max_size=None,
            )
        )
        await first.start()
        await second.start()
        return first, second

    bob_ws, carol_ws = await join_both()
    await asyncio.sleep(0.15)  # into the joins' access checks and the room's load
    answered = bob_ws.received > 0 or carol_ws.received > 0
    await asyncio.to_thread(remove_give_back_remove)
    closed = await _closed_within(bob_ws, 10)
    print(f"several changes: room answered before: {answered}; bob closed in {closed}")
    assert not answered
    assert closed is not None, "the socket stayed open after its grant was removed (twice)"
    assert bob_ws.ws.close_code == 4403
    await asyncio.wait_for(carol_ws.synced.wait(), 15)
    assert not carol_ws.reader.done()
    # Her last role reaches the room as a notice, after the owner's answer: told to her.
    await eventually_async(
        lambda: (getattr(carol_ws, "session", None) or {}).get("role") == "runner", what="carol told she runs"
    )
    carol_ws.text().insert(0, "<carol>")
    await carol_ws.flush()

    async def saved() -> bool:
        return "<carol>" in await asyncio.to_thread(stack.stored_source, nb)

    await eventually_async(saved, what="carol's edit saved")
    assert not carol_ws.reader.done()
    assert carol_ws.denied == []
    await carol_ws.ws.close()


async def test_a_grant_removed_while_the_room_unloads_and_loads_again_closes_the_joiner(stack, big_ipynb):
    alice = stack.user_with_notebook("alice-reload@example.com", ipynb=big_ipynb, title="Big")
    bob = stack.user_with_notebook("bob-reload@example.com", notebook=None)
    nb = alice["notebook_id"]
    grant_id = stack.call("share_with", nb, "bob-reload@example.com", "editor")["grant_id"]
    a_port, b_port = stack.start_worker(**RECHECK), stack.start_worker(**RECHECK)
    owner = owner_client(b_port, alice["cookie"])
    keeper = await open_client(a_port, nb, alice["cookie"])
    await keeper.ws.close()  # the room unloads 0.2 s later; the join loads it again
    await asyncio.wait_for(keeper.reader, 5)
    await asyncio.sleep(0.3)  # past the unload delay (0.2 s): the join loads the room again

    def remove():
        assert (
            post(owner, f"/n/{nb}/share", {"action": "remove_grant", "grant_id": grant_id}).status_code == 302
        )

    ws, took, answered = await _join_while(a_port, nb, bob["cookie"], remove)
    closed = await _closed_within(ws, 10)
    print(
        f"around an unload: removed in {took * 1000:.0f} ms (answered before: {answered}), closed in {closed}"
    )
    assert closed is not None, "the socket stayed open after its grant was removed"
    assert ws.ws.close_code == 4403
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.ws.close()
