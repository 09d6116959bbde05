"""Every principal against every surface: one test per cell of the matrix.

Principals: owner, editor, runner, viewer (grants); link guests with each role; a guest whose
link expired, whose link was revoked, who holds a link to another notebook; a stranger
(Charlie) and an anonymous visitor. Surfaces: the notebook page, download, websocket connect,
websocket update, awareness, kernel actions, the kernel status's message, kernel settings,
sharing actions, health and metrics (public / operators only).
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from audit.models import AuditEvent
from collab import protocol
from collab.rooms import get_room
from kernels.models import KernelServer
from notebooks import sharing
from notebooks.models import Grant, Invitation, LinkJoin, NotebookUpdate, Removal, Role, ShareLink
from tests.support.cast import make_user
from tests.support.consumer import connect
from tests.support.principals import PRINCIPALS, link_guest, owner_access, principal
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED_VIEW = {"owner", "editor", "runner", "viewer", "link-viewer", "link-editor", "link-runner"}
ALLOWED_EDIT = {"owner", "editor", "runner", "link-editor", "link-runner"}
ALLOWED_RUN = {"owner", "runner", "link-runner"}
ALLOWED_SHARE = {"owner"}
# what a refused principal gets: 403 for anyone signed in or holding some role, a sign-in
# redirect for anonymous visitors without a valid link
SIGNED_IN_OR_ROLE = ALLOWED_VIEW | {"stranger"}
REFUSED_WS = {"stranger": 4403}


def expect_http(kind: str, allowed: set[str], response) -> None:
    if kind in allowed:
        assert response.status_code in (200, 202, 400), response.status_code
    elif kind in SIGNED_IN_OR_ROLE:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_notebook_page(notebook, kind):
    expect_http(kind, ALLOWED_VIEW, principal(kind, notebook).get(f"/n/{notebook.pk}/"))


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_download(notebook, kind):
    expect_http(kind, ALLOWED_VIEW, principal(kind, notebook).get(f"/n/{notebook.pk}/download"))


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_kernel_actions(notebook, kind):
    client = principal(kind, notebook)
    expect_http(kind, ALLOWED_RUN, client.get(f"/n/{notebook.pk}/kernel/"))
    # an empty run request: 400 once access is granted, so no kernel is started here
    expect_http(
        kind, ALLOWED_RUN, client.post(f"/n/{notebook.pk}/kernel/run", b"{}", content_type="application/json")
    )


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_sharing_actions(notebook, kind):
    client = principal(kind, notebook)
    expect_http(kind, ALLOWED_SHARE, client.get(f"/n/{notebook.pk}/share"))
    response = client.post(
        f"/n/{notebook.pk}/share", {"action": "create_link", "label": "x", "role": "viewer"}
    )
    created = ShareLink.objects.filter(label="x").exists()
    assert created == (kind in ALLOWED_SHARE)
    if kind not in ALLOWED_SHARE:
        expect_http(kind, ALLOWED_SHARE, response)


async def _socket(kind, notebook):
    client = await database_sync_to_async(principal)(kind, notebook)
    cookie = f"sessionid={client.cookies['sessionid'].value}" if "sessionid" in client.cookies else None
    ws, connected = await connect(notebook.pk, cookie)
    assert connected
    await ws.start()
    if kind in ALLOWED_VIEW:
        await ws.pump_until(ws.synced.is_set, what=f"the first sync of the {kind}")
    return ws


@pytest.mark.parametrize("kind", PRINCIPALS)
async def test_websocket_connect(notebook, kind):
    ws = await _socket(kind, notebook)
    if kind in ALLOWED_VIEW:
        assert ws.synced.is_set()
        assert ws.closed is None
        await ws.comm.disconnect()
    else:
        await ws.wait_closed()
        assert ws.closed["code"] == REFUSED_WS.get(kind, 4401)
        assert not ws.synced.is_set()


@pytest.mark.parametrize("kind", sorted(ALLOWED_VIEW))
async def test_websocket_update(notebook, kind):
    ws = await _socket(kind, notebook)
    ws.text().insert(0, f"written by {kind}")
    await ws.flush()
    count = database_sync_to_async(NotebookUpdate.objects.filter(notebook=notebook).count)

    async def stored() -> bool:
        return await count() == 1

    if kind in ALLOWED_EDIT:
        await eventually_async(stored, what=f"the {kind}'s update to be stored")
        await ws.pump()
        assert ws.denied == []
    else:
        await ws.pump_until(lambda: ws.denied, what=f"the {kind}'s update to be refused")
        assert await count() == 0
        assert ws.denied == ["You can view this notebook but not change it."]
    await ws.comm.disconnect()


@pytest.mark.parametrize("kind", sorted(ALLOWED_VIEW))
async def test_awareness(notebook, kind):
    ws = await _socket(kind, notebook)
    await ws.set_awareness({"user": {"name": "The Teacher", "role": "owner"}})
    await ws.pump_until(lambda: ws.doc.client_id in ws.awareness, what="the stamped presence")
    me = ws.awareness[ws.doc.client_id]["user"]
    assert me["name"] != "The Teacher"
    expected_role = kind.removeprefix("link-")
    assert me["role"] == expected_role
    if kind.startswith("link-"):
        assert me["name"] == f"Guest via {expected_role} link"
    await ws.comm.disconnect()


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_kernel_settings(notebook, kind):
    client = principal(kind, notebook)
    expect_http(kind, ALLOWED_SHARE, client.get(f"/n/{notebook.pk}/kernel/settings"))
    # a public address given as such: nothing is resolved or contacted when it is stored
    server = {"action": "add_server", "name": "Box", "url": "http://8.8.8.8:8888", "token": "t"}
    response = client.post(f"/n/{notebook.pk}/kernel/settings", server)
    assert KernelServer.objects.filter(name="Box").exists() == (kind in ALLOWED_SHARE)
    if kind not in ALLOWED_SHARE:
        expect_http(kind, ALLOWED_SHARE, response)


@pytest.mark.parametrize("kind", sorted(ALLOWED_VIEW))
async def test_kernel_status_message(notebook, kind):
    """Everyone in the room sees the kernel's status; why a run failed, only those who may run."""
    client = await database_sync_to_async(principal)(kind, notebook)
    cookie = f"sessionid={client.cookies['sessionid'].value}" if "sessionid" in client.cookies else None
    ws, connected = await connect(notebook.pk, cookie, "ext=1")
    assert connected
    await ws.start()
    await ws.pump()
    state = {"status": "idle", "queue": [], "running": None, "message": "Could not run: why", "input": None}
    await (await get_room(str(notebook.pk))).set_kernel_state(state)
    await ws.pump()
    assert ws.kernel["status"] == "idle"
    assert ws.kernel["message"] == ("Could not run: why" if kind in ALLOWED_RUN else "")
    await ws.comm.disconnect()


# sharing when the owner lets people who can edit share: ceilings, guests, leaving, removal

ALLOWED_SHARE_WHEN_ON = {"owner", "editor", "runner"}  # never guests: links do not let anyone share
ROLE_OF = {
    "owner": Role.OWNER,
    "editor": Role.EDITOR,
    "runner": Role.RUNNER,
    "viewer": Role.VIEWER,
    "link-viewer": Role.VIEWER,
    "link-editor": Role.EDITOR,
    "link-runner": Role.RUNNER,
}


def _editors_share(notebook):
    notebook.editors_can_share = True
    notebook.save(update_fields=["editors_can_share"])


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_sharing_page_when_editors_may_share(notebook, kind):
    _editors_share(notebook)
    client = principal(kind, notebook)
    response = client.get(f"/n/{notebook.pk}/share")
    expect_http(kind, ALLOWED_SHARE_WHEN_ON, response)
    if kind not in ALLOWED_SHARE_WHEN_ON:
        assert notebook.owner.email not in response.content.decode()
    client.post(f"/n/{notebook.pk}/share", {"action": "create_link", "label": "x", "role": "viewer"})
    assert ShareLink.objects.filter(label="x").exists() == (kind in ALLOWED_SHARE_WHEN_ON)


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_nobody_shares_above_their_own_role(notebook, kind):
    _editors_share(notebook)
    co_owner = make_user("coowner@example.com", "Co Owner")
    co_grant = Grant.objects.create(notebook=notebook, user=co_owner, role=Role.OWNER)
    client = principal(kind, notebook)
    own = ROLE_OF.get(kind, Role.VIEWER)
    above = list(Role)[min(own.rank + 1, Role.OWNER.rank)]
    mine = Grant.objects.filter(notebook=notebook, user__email=f"{kind}@example.com").first()
    if mine is not None:
        post = {"action": "change_role", "grant_id": mine.pk, "role": "owner"}
        client.post(f"/n/{notebook.pk}/share", post)
        assert Grant.objects.get(pk=mine.pk).role == own
    client.post(f"/n/{notebook.pk}/share", {"action": "create_link", "label": "up", "role": above.value})
    client.post(
        f"/n/{notebook.pk}/share", {"action": "invite", "emails": "new@example.com", "role": above.value}
    )
    client.post(f"/n/{notebook.pk}/share", {"action": "remove_grant", "grant_id": co_grant.pk})
    if kind == "owner":  # the owner holds the top role: a runner link, and removing a co-owner, are fine
        assert not Grant.objects.filter(pk=co_grant.pk).exists()
    else:
        assert Grant.objects.filter(pk=co_grant.pk, role=Role.OWNER).exists()
        assert not ShareLink.objects.filter(label="up", role=above).exists()
        assert not Invitation.objects.filter(email="new@example.com", role=above).exists()


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_leave(notebook, kind):
    client = principal(kind, notebook)
    response = client.post(f"/n/{notebook.pk}/leave")
    if kind == "owner":
        assert client.get(f"/n/{notebook.pk}/").status_code == 200
    elif kind in ("editor", "runner", "viewer"):
        assert response.status_code == 302
        assert client.get(f"/n/{notebook.pk}/").status_code == 403
    elif kind == "stranger":
        assert response.status_code == 403
    else:  # leaving needs an account; anonymous visitors are sent to sign in, and nothing is said
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert not AuditEvent.objects.filter(action="grant.removed", actor__email="charlie@example.com").exists()


@pytest.mark.parametrize("kind", sorted(ALLOWED_VIEW - {"owner"}))
def test_removal_closes_the_path(notebook, kind):
    client = principal(kind, notebook)
    owner = Client()
    owner.force_login(notebook.owner)
    if kind.startswith("link-"):
        link = ShareLink.objects.get(notebook=notebook)
        owner.post(f"/n/{notebook.pk}/share", {"action": "revoke_link", "link_id": link.pk})
        assert client.get(f"/n/{notebook.pk}/").status_code == 302
    else:
        grant = Grant.objects.get(notebook=notebook)
        _, token = sharing.create_link(owner_access(notebook), label="way back", role=Role.EDITOR)
        owner.post(f"/n/{notebook.pk}/share", {"action": "remove_grant", "grant_id": grant.pk})
        assert client.get(f"/n/{notebook.pk}/").status_code == 403
        assert client.get(f"/s/{token}").status_code == 404  # no way back in through a link
        assert client.get(f"/n/{notebook.pk}/").status_code == 403


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_remove_a_link_joiner(notebook, kind):
    """Only an owner removes a guest who came through a link (editors may share here); the
    removed guest's session is refused by the page and by the link, the link keeps working."""
    _editors_share(notebook)
    guest, link = link_guest(notebook, Role.EDITOR)
    join = LinkJoin.objects.get(link=link)
    client = principal(kind, notebook)
    client.post(f"/n/{notebook.pk}/share", {"action": "remove_guest", "join_id": join.pk})
    removed = Removal.objects.filter(notebook=notebook, guest_key=join.guest_key).exists()
    assert removed == (kind == "owner")
    assert (guest.get(f"/n/{notebook.pk}/").status_code == 200) == (not removed)


@pytest.mark.parametrize("kind", PRINCIPALS)
@pytest.mark.parametrize("editors_share", [False, True])
def test_change_general_access(notebook, kind, editors_share):
    """General access is changed by whoever may share, up to their own role (never above)."""
    if editors_share:
        _editors_share(notebook)
    allowed = ALLOWED_SHARE_WHEN_ON if editors_share else ALLOWED_SHARE
    client = principal(kind, notebook)
    post = {"action": "general_access", "level": "anyone", "role": "viewer"}
    client.post(f"/n/{notebook.pk}/share", post)
    assert ShareLink.objects.usable().filter(general=True).exists() == (kind in allowed)
    client.post(f"/n/{notebook.pk}/share", {**post, "role": "runner"})
    above = ROLE_OF.get(kind, Role.VIEWER).rank < Role.RUNNER.rank
    ran = ShareLink.objects.filter(general=True, role=Role.RUNNER).exists()
    assert ran == (kind in allowed and not above)


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_copy_a_link(notebook, kind):
    """A live link is copied again by an owner only (or its maker): nobody else sees its URL."""
    _editors_share(notebook)
    link, token = sharing.create_link(owner_access(notebook), label="copy me", role=Role.VIEWER)
    client = principal(kind, notebook)
    client.post(f"/n/{notebook.pk}/share", {"action": "copy_link", "link_id": link.pk})
    page = client.get(f"/n/{notebook.pk}/share")
    assert (token in page.content.decode()) == (kind == "owner")
    assert AuditEvent.objects.filter(action="link.copied").exists() == (kind == "owner")


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_renew_the_general_link(notebook, kind):
    """General access gets a new URL from an owner only (or whoever last set it): nobody else
    may cut everyone's way in, nor see the new URL."""
    _editors_share(notebook)
    sharing.set_general_access(owner_access(notebook), "anyone", Role.VIEWER)
    old_hash = ShareLink.objects.get(general=True).token_hash
    client = principal(kind, notebook)
    client.post(f"/n/{notebook.pk}/share", {"action": "renew_general_link"})
    renewed = ShareLink.objects.get(general=True).token_hash != old_hash
    assert renewed == (kind == "owner")
    assert AuditEvent.objects.filter(action="link.renewed").exists() == (kind == "owner")


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_health_is_public_and_tells_nothing_more(notebook, kind):
    response = principal(kind, notebook).get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_metrics_answer_only_the_operators_token(notebook, kind, settings):
    client = principal(kind, notebook)
    assert client.get("/metrics").status_code == 404  # no METRICS_TOKEN: no metrics at all
    settings.METRICS_TOKEN = "operator-secret"
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer operator-secret").status_code == 200


@pytest.mark.parametrize("kind", sorted(ALLOWED_VIEW))
async def test_completion_and_help(notebook, kind):
    """Tab completion and Shift-Tab help: only those who may run ask the kernel; the answer
    (here: no kernel is running) goes to the asking socket alone."""
    client = await database_sync_to_async(principal)(kind, notebook)
    cookie = f"sessionid={client.cookies['sessionid'].value}" if "sessionid" in client.cookies else None
    ws, connected = await connect(notebook.pk, cookie, "ext=1")
    assert connected
    await ws.start()
    await ws.pump()
    await ws.comm.send_to(bytes_data=protocol.command(1, "complete", {"code": "pri", "cursor_pos": 3}))
    await ws.comm.send_to(bytes_data=protocol.command(2, "inspect", {"code": "len", "cursor_pos": 3}))
    await ws.pump_until(lambda: len(ws.replies) == 2, what="both replies")
    for reply in ws.replies.values():
        if kind in ALLOWED_RUN:
            assert reply["status"] == 409
            assert "run a cell to start it" in reply["body"]["error"]
        else:
            assert reply["status"] == 403
    await ws.comm.disconnect()
