"""What one person's sockets may cost a room: malformed sync steps, too many sockets, presence
taken from someone else or too large, a handler that fails. Driven through the real ASGI app."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from collab import consumers, protocol, yupdate
from collab.rooms import ROOMS
from notebooks import sharing
from notebooks.models import Role
from tests.support.cast import cookie_for
from tests.support.consumer import close_all, connect, grant, joined
from tests.support.principals import owner_access

pytestmark = pytest.mark.django_db(transaction=True)


def room_of(notebook):
    return ROOMS[str(notebook.pk)]


@pytest.mark.parametrize("state_vector", [b"\xff", b"", b"\x05\x07garbage"])
async def test_it_closes_4400_on_an_undecodable_state_vector_and_frees_its_place(
    notebook, alice, state_vector
):
    a = await joined(notebook.pk, alice)
    b = await joined(notebook.pk, alice)
    assert len(room_of(notebook).sockets) == 2
    await b.comm.send_to(bytes_data=protocol.sync_step1(state_vector))
    await b.wait_closed()
    assert b.closed["code"] == 4400
    assert "state vector" in b.closed["reason"]
    assert len(room_of(notebook).sockets) == 1
    assert {f"u:{alice.pk}": 1} == consumers.SOCKETS_PER_PERSON
    await close_all(a)
    assert consumers.SOCKETS_PER_PERSON == {}


async def test_a_failing_handler_closes_1011_and_frees_the_place(notebook, alice, monkeypatch):
    a = await joined(notebook.pk, alice)
    b = await joined(notebook.pk, alice)

    async def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(room_of(notebook), "handle_step1", broken)
    await b.comm.send_to(bytes_data=protocol.sync_step1(b"\x00"))
    await b.wait_closed()
    assert b.closed["code"] == 1011
    assert len(room_of(notebook).sockets) == 1
    await close_all(a)


async def test_one_viewer_cannot_fill_a_room_and_lock_the_owner_out(notebook, alice, bob, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_SOCKETS_PER_ROOM": 4, "MAX_SOCKETS_PER_PERSON": 3}
    await grant(notebook, bob, Role.VIEWER)
    mine = [await joined(notebook.pk, bob) for _ in range(3)]
    cookie = await database_sync_to_async(cookie_for)(bob)
    extra, _ = await connect(notebook.pk, cookie)
    await extra.wait_closed()
    assert extra.closed["code"] == 4413
    assert "too many notebook connections" in extra.closed["reason"]
    owner = await joined(notebook.pk, alice)
    assert owner.closed is None
    await close_all(*mine)
    again = await joined(notebook.pk, bob)  # closing gives the places back
    await close_all(owner, again)


def link_guest_cookies(notebook, count: int) -> list[str]:
    """`count` anonymous people who each opened the same share link: one guest each."""
    _, token = sharing.create_link(
        owner_access(notebook), label="open", role=Role.VIEWER, require_login=False
    )
    cookies = []
    for _ in range(count):
        client = Client()
        assert client.get(f"/s/{token}").status_code == 302
        cookies.append(f"sessionid={client.cookies['sessionid'].value}")
    return cookies


async def test_link_guests_cannot_fill_a_room_and_lock_the_owner_out(notebook, alice, bob, settings):
    # Each anonymous visit of a link is a new guest, so the per-person cap does not bound them:
    # together they get a share of the room, and the owner and grantees keep the rest.
    settings.COLLAB = {
        **settings.COLLAB,
        "MAX_SOCKETS_PER_ROOM": 6,
        "MAX_GUEST_SOCKETS_PER_ROOM": 4,
        "MAX_SOCKETS_PER_PERSON": 2,
    }
    await grant(notebook, bob, Role.VIEWER)
    cookies = await database_sync_to_async(link_guest_cookies)(notebook, 4)
    guests = []
    for cookie in cookies[:2]:
        for _ in range(2):
            guest, connected = await connect(notebook.pk, cookie)
            assert connected
            await guest.start()
            await guest.pump_until(guest.synced.is_set, what="the guest's first sync")
            guests.append(guest)
    refused = []
    for cookie in cookies[2:]:
        extra, _ = await connect(notebook.pk, cookie)
        await extra.wait_closed()
        refused.append(extra.closed)
    assert {closed["code"] for closed in refused} == {4429}  # the client tries again later
    assert all("through share links" in closed["reason"] for closed in refused)
    owner = await joined(notebook.pk, alice)
    grantee = await joined(notebook.pk, bob)
    assert owner.closed is None
    assert grantee.closed is None
    assert len(room_of(notebook).sockets) == 6
    await close_all(guests[0])
    again, connected = await connect(notebook.pk, cookies[2])  # a place of the guests' share is free
    assert connected
    await again.start()
    await again.pump_until(again.synced.is_set, what="the guest's first sync")
    assert again.closed is None
    await close_all(*guests[1:], again, owner, grantee)


async def test_a_socket_cannot_claim_or_remove_another_clients_presence(notebook, alice, bob):
    await grant(notebook, bob, Role.VIEWER)
    a = await joined(notebook.pk, alice)
    b = await joined(notebook.pk, bob)
    await a.set_awareness({"cell": "mine"})
    await a.pump()
    await b.pump()
    assert b.awareness[a.doc.client_id]["user"]["name"] == "Alice Smith"
    # Bob's socket has not spoken yet: its first message claims Alice's id, then removes it.
    await b.set_awareness({"cell": "taken"}, client_id=a.doc.client_id, clock=7)
    entry = (a.doc.client_id, 8, "null")
    await b.comm.send_to(bytes_data=protocol.awareness(protocol.encode_awareness([entry])))
    await a.pump()
    state = room_of(notebook).presence.states[a.doc.client_id]
    assert json.loads(state[1])["cell"] == "mine"
    assert json.loads(state[1])["user"]["name"] == "Alice Smith"
    assert a.closed is None
    # Bob's own id is still his to use.
    await b.set_awareness({"cell": "bob"}, clock=1)
    await a.pump_until(lambda: b.doc.client_id in a.awareness, what="Bob's presence")
    assert a.awareness[b.doc.client_id]["user"]["name"] == "Bob Jones"
    await close_all(a, b)


async def test_it_closes_4413_on_oversized_presence_and_relays_nothing(notebook, alice, bob, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_AWARENESS_BYTES": 2048}
    await grant(notebook, bob, Role.VIEWER)
    a = await joined(notebook.pk, alice)
    b = await joined(notebook.pk, bob)
    await b.set_awareness({"blob": "x" * 4096})
    await b.wait_closed()
    assert b.closed["code"] == 4413
    await a.pump()
    assert b.doc.client_id not in a.awareness
    await close_all(a)


async def test_a_command_nested_past_the_parsers_depth_closes_4400(notebook, alice):
    a = await joined(notebook.pk, alice, query="ext=1")
    b = await joined(notebook.pk, alice, query="ext=1")
    await b.comm.send_to(
        bytes_data=bytes([protocol.MessageType.COMMAND]) + protocol.write_string("[" * 100_000)
    )
    await b.wait_closed()
    assert b.closed["code"] == 4400
    assert len(room_of(notebook).sockets) == 1
    await close_all(a)


BAD_PRESENCE = [
    pytest.param(2**53, 1, '{"cell":"a"}', "client id", id="client id past 2^53-1"),
    pytest.param(None, 2**53, '{"cell":"a"}', "clock", id="clock past 2^53-1"),
    pytest.param(None, 1, '{"x":NaN}', "JSON", id="NaN"),
    pytest.param(None, 1, '{"x":1e999}', "JSON", id="a number JSON cannot hold"),
    pytest.param(None, 1, '{"x":-Infinity}', "JSON", id="Infinity"),
]


@pytest.mark.parametrize(("client_id", "clock", "state", "named"), BAD_PRESENCE)
async def test_presence_a_browser_could_not_decode_closes_4400_and_is_not_relayed(
    notebook, alice, bob, client_id, clock, state, named
):
    # One entry that browsers' decoders reject (lib0 numbers stop at 2^53, JSON.parse refuses
    # NaN and Infinity) would break every newcomer's whole presence message.
    await grant(notebook, bob, Role.VIEWER)
    a = await joined(notebook.pk, alice)
    b = await joined(notebook.pk, bob)
    entry = (b.doc.client_id if client_id is None else client_id, clock, state)
    await b.comm.send_to(bytes_data=protocol.awareness(protocol.encode_awareness([entry])))
    await b.wait_closed()
    assert b.closed["code"] == 4400
    assert named in b.closed["reason"]
    assert room_of(notebook).presence.states == {}
    await a.set_awareness({"cell": "mine"})
    await a.pump()
    assert set(a.awareness) == {a.doc.client_id}
    await close_all(a)


async def test_a_room_loaded_for_a_join_that_is_then_refused_unloads(notebook, alice, settings):
    """A refused first joiner (a stale epoch here) must not keep the notebook in memory."""
    from tests.support.waiting import eventually_async

    settings.COLLAB = {**settings.COLLAB, "ROOM_UNLOAD_DELAY": 0.2}
    cookie = await database_sync_to_async(cookie_for)(alice)
    refused, _ = await connect(notebook.pk, cookie, query="epoch=not-the-epoch")
    await refused.wait_closed()
    assert refused.closed["code"] == 4409
    await eventually_async(lambda: str(notebook.pk) not in ROOMS, timeout=5, what="the room to unload")


@pytest.mark.parametrize("path", ["0123456789abcdef0123456789abcdef", "not-a-notebook", "x/y"])
async def test_a_websocket_to_no_notebook_path_closes_4404_not_a_server_error(alice, path):
    cookie = await database_sync_to_async(cookie_for)(alice)
    client, connected = await connect(path, cookie)
    assert connected
    await client.wait_closed()
    assert client.closed["code"] == 4404


async def test_a_reconnecting_clients_presence_cannot_be_taken_while_it_is_away(notebook, alice, bob):
    """The browser keeps its client id across a reconnect: in the moment between its old
    socket closing and its new one speaking, another person's socket must not claim that id
    (it would show as the other person, and the owner's return would be ignored)."""
    await grant(notebook, bob, Role.VIEWER)
    observer = await joined(notebook.pk, alice)  # keeps the room loaded
    a = await joined(notebook.pk, alice)
    mine = a.doc.client_id
    await a.set_awareness({"cell": "mine"}, clock=1)
    await observer.pump_until(lambda: mine in observer.awareness, what="Alice's presence")
    await close_all(a)  # a network blip
    b = await joined(notebook.pk, bob)
    await b.set_awareness({"cell": "taken"}, client_id=mine, clock=50)
    back = await joined(notebook.pk, alice)
    await back.set_awareness({"cell": "back"}, client_id=mine, clock=2)
    await observer.pump_until(
        lambda: (observer.awareness.get(mine) or {}).get("cell") == "back", what="Alice's return"
    )
    state = json.loads(room_of(notebook).presence.states[mine][1])
    assert state["user"]["name"] == "Alice Smith"
    await close_all(observer, b, back)


def guest_session(notebook) -> tuple[str, str]:
    """A guest through a viewer link: (its cookie, its guest key)."""
    _, token = sharing.create_link(
        owner_access(notebook), label="open", role=Role.VIEWER, require_login=False
    )
    client = Client()
    assert client.get(f"/s/{token}").status_code == 302
    return f"sessionid={client.cookies['sessionid'].value}", client.session["guest_key"]


async def test_a_guest_who_signs_in_keeps_the_presence_of_their_open_tab(notebook, alice, bob, monkeypatch):
    """A guest's tab keeps its client id when its socket reconnects; if the guest signed in
    meanwhile (in another tab), the tab reconnects as that account. Its id was kept for the
    guest, a person who no longer connects: the tab's presence must not be ignored for as long
    as the room stays open (hours, in a busy notebook)."""
    from collab import awareness

    await grant(notebook, bob, Role.VIEWER)
    cookie, guest_key = await database_sync_to_async(guest_session)(notebook)
    observer = await joined(notebook.pk, alice)
    tab, connected = await connect(notebook.pk, cookie)
    assert connected
    await tab.start()
    await tab.pump_until(tab.synced.is_set, what="the guest's first sync")
    mine = tab.doc.client_id
    await tab.set_awareness({"cell": "guest"}, clock=1)
    await observer.pump_until(lambda: mine in observer.awareness, what="the guest's presence")
    await tab.comm.disconnect()  # a blip; meanwhile the guest signs in as Bob
    await observer.pump_until(lambda: mine not in observer.awareness, what="the guest leaving")
    later = time.monotonic() + 3600  # an hour later, the room still open
    monkeypatch.setattr(awareness, "time", type("Clock", (), {"monotonic": staticmethod(lambda: later)}))
    signed_in = await database_sync_to_async(cookie_for)(bob, guest_key=guest_key)
    back, connected = await connect(notebook.pk, signed_in)
    assert connected
    await back.start()
    await back.pump_until(back.synced.is_set, what="the tab's sync as Bob")
    await back.set_awareness({"cell": "back"}, client_id=mine, clock=2)
    await observer.pump_until(lambda: mine in observer.awareness, what="the tab's presence as Bob")
    await close_all(observer, back)


def edit_link_guest_cookies(notebook, count: int) -> list[str]:
    """`count` visits of one edit link without signing in (a new session each: one guest each)."""
    _, token = sharing.create_link(
        owner_access(notebook), label="edit", role=Role.EDITOR, require_login=False
    )
    cookies = []
    for _ in range(count):
        client = Client()
        assert client.get(f"/s/{token}").status_code == 302
        cookies.append(f"sessionid={client.cookies['sessionid'].value}")
    return cookies


async def test_a_guest_who_made_the_room_reload_is_not_let_in_again_by_a_new_session(
    notebook, alice, settings, monkeypatch
):
    """An editor whose update made the room reload is kept out of notebooks on that worker for a
    while (`KEEP_OUT_AFTER_RELOAD`), as their person (`Principal.key`). A guest of an edit link is
    a new person with every session: opening the link again (one GET, no sign-in, no limit for a
    link that exists) gave a new key, and the room reloaded again for everyone in it, as often as
    that guest liked. The anonymous guests of that link are kept out with them; signed-in people
    are not. (Only an update too large to be read before it is applied makes the room reload.)"""
    monkeypatch.setattr(yupdate, "CHECK_BEFORE_MAX_BYTES", 0)
    settings.COLLAB = {**settings.COLLAB, "KEEP_OUT_AFTER_RELOAD": 60.0}
    cookies = await database_sync_to_async(edit_link_guest_cookies)(notebook, 3)
    owner = await joined(notebook.pk, alice)
    closes = []
    for cookie in cookies:
        guest, connected = await connect(notebook.pk, cookie, query=f"epoch={notebook.epoch}")
        assert connected
        await guest.start()
        with contextlib.suppress(Exception):  # a guest kept out is closed before it syncs
            await guest.pump_until(guest.synced.is_set, what="the guest's first sync")
        if guest.closed is None:
            guest.cells[0]["source"].insert(0, "a")
            guest._outbox.clear()  # the first edit is never sent: the second waits for it
            guest.cells[0]["source"].insert(0, "b")
            await guest.flush()
        closes.append((await guest.wait_closed())["code"])
    assert closes == [4400, 4429, 4429], closes
    again = await joined(notebook.pk, alice)
    assert again.closed is None
    await close_all(owner, again)


async def _close_code(comm, timeout: float = 0.5) -> int | None:
    """The code the server closed a socket with, reading its frames without answering them (a
    client that never sends its sync step 2), or None if it stays open."""
    while not await comm.receive_nothing(timeout):
        message = await comm.receive_output()
        if message["type"] == "websocket.close":
            return message["code"]
    return None


def _scratch(text: str) -> bytes:
    """An update of a document of its own holding `text`."""
    from pycrdt import Doc, Text

    doc = Doc()
    doc.get("scratch", type=Text).insert(0, text)
    return doc.get_update()


@pytest.mark.parametrize("who", ["the guests of one link", "one person"])
async def test_sockets_that_never_send_their_sync_step_2_hold_a_bounded_amount_together(
    notebook, alice, bob, who, monkeypatch
):
    """A socket's updates wait for its sync step 2, at most `EARLY_BYTES_MAX` (1 MiB) of them. A
    person's sockets (20 on a worker), or the anonymous guests of one edit link (300 places in a
    room, and a new guest with each visit of the link), that never send it held that much each:
    40 guests of one link took a worker from 99 to 143 MB, which it kept after they left. Together
    they hold at most `EARLY_BYTES_PER_PERSON`; the socket that would pass it is closed (4400)."""
    monkeypatch.setattr(consumers, "EARLY_BYTES_MAX", 16 * 1024)
    monkeypatch.setattr(consumers, "EARLY_BYTES_PER_PERSON", 32 * 1024)
    if who == "one person":
        await grant(notebook, bob, Role.EDITOR)
        cookies = [await database_sync_to_async(cookie_for)(bob)] * 4
    else:
        cookies = await database_sync_to_async(edit_link_guest_cookies)(notebook, 4)
    clients = []
    for cookie in cookies:
        client, connected = await connect(notebook.pk, cookie, query=f"epoch={notebook.epoch}")
        assert connected
        for _ in range(3):  # 12 KB: what one socket may hold
            await client.comm.send_to(bytes_data=protocol.sync_update(_scratch("y" * 4000)))
        clients.append(client)
    codes = [await _close_code(client.comm) for client in clients]
    held = sum(socket._early_bytes for socket in room_of(notebook).sockets)
    assert codes[:2] == [None, None], codes
    assert 4400 in codes[2:], codes
    assert held <= 32 * 1024, (held, codes)
    owner = await joined(notebook.pk, alice)  # the room goes on
    await close_all(owner, *(client for client, code in zip(clients, codes, strict=True) if code is None))
    assert consumers.EARLY_HELD == {}
