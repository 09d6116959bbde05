"""The kernel bridge end to end: real Jupyter Server + ipykernel, the real ASGI app, real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator

from audit.models import AuditEvent
from config.asgi import application
from kernels.bridge import BRIDGES, get_bridge
from kernels.local_server import LocalJupyterServer
from notebooks import actions
from notebooks.models import Grant, Role
from tests.support.cast import cookie_for
from tests.support.consumer import close_all, flushed, joined
from tests.support.kernels import add_code_cell, outputs, post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def kernel_settings(settings, jupyter_server: LocalJupyterServer) -> AsyncIterator[None]:
    settings.JUPYTER_SERVER_URL = jupyter_server.url
    settings.JUPYTER_SERVER_TOKEN = jupyter_server.token
    yield
    async with asyncio.timeout(60):  # a shutdown that hangs fails the test instead of the run
        for bridge in list(BRIDGES.values()):
            await bridge.shutdown()


async def test_a_run_reaches_every_socket_and_the_database(notebook, alice, bob):
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=bob, role=Role.VIEWER)
    a = await joined(notebook.pk, alice, query="ext=1")
    b = await joined(notebook.pk, bob, query="ext=1")
    a.text().insert(0, 'print("hi 😀")')
    await flushed(a)
    await a.pump()
    cell_id = a.cells[0]["id"]

    status, body = await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]})
    assert (status, body) == (202, {"queued": [cell_id]})
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    await b.pump()

    assert outputs(b) == [{"output_type": "stream", "name": "stdout", "text": "hi 😀\n"}]
    assert b.cells[0]["execution_count"] == 1
    await close_all(a, b)
    await get_bridge(notebook.pk).shutdown()
    nb = await database_sync_to_async(actions.current_notebook)(notebook.pk)
    assert nb.cells[0].outputs[0]["text"] == "hi 😀\n"
    assert nb.cells[0].execution_count == 1


async def test_viewers_and_editors_may_not_run(notebook, alice, bob, charlie):
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=bob, role=Role.VIEWER)
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=charlie, role=Role.EDITOR)
    for user in (bob, charlie):
        for action in ("run", "interrupt", "restart", "shutdown"):
            status, _ = await post(notebook.pk, user, action, {"cell_ids": ["x"]})
            assert status == 403, (user, action)
    assert str(notebook.pk) not in BRIDGES


async def test_cells_a_dead_worker_left_running_or_queued_are_released(notebook, alice):
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "1")
    add_code_cell(a, "queued", "2")
    add_code_cell(a, "mine", "print(3)")
    a.cells[0]["execution_state"] = "running"  # as a worker killed mid-run leaves them
    a.cells[1]["execution_state"] = "queued"
    await flushed(a)

    status, _ = await post(notebook.pk, alice, "run", {"cell_ids": ["mine"]})
    assert status == 202
    await get_bridge(notebook.pk).wait_idle()
    # The bridge's last writes reach the socket after it is idle: once they are saved.
    await a.pump_until(
        lambda: [c.get("execution_state") for c in a.cells] == ["idle", "idle", "idle"],
        what="the cells released",
    )
    await a.pump()
    [error] = outputs(a, 0)
    assert "stopped; run it again" in error["evalue"]
    assert outputs(a, 1) == []
    assert outputs(a, 2)[0]["text"] == "3\n"
    await close_all(a)


async def test_two_queued_runs_finish_in_order(notebook, alice):
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "import time; time.sleep(0.3); print('first')")
    add_code_cell(a, "second", "print('second')")
    await flushed(a)
    await a.pump()
    first = a.cells[0]["id"]
    bridge = get_bridge(notebook.pk)
    assert await bridge.enqueue([first], alice) == [first]
    assert await bridge.enqueue(["second"], alice) == ["second"]
    await bridge.wait_idle()
    await a.pump()
    assert outputs(a, 0)[0]["text"] == "first\n"
    assert outputs(a, 1)[0]["text"] == "second\n"
    assert (a.cells[0]["execution_count"], a.cells[1]["execution_count"]) == (1, 2)
    await close_all(a)


async def test_a_restart_fails_what_came_before_it_and_runs_what_came_during_it(notebook, alice):
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "import time; print('long', flush=True); time.sleep(30)")
    add_code_cell(a, "queued", "print('queued before the restart')")
    add_code_cell(a, "during", "print('sent during the restart')")
    await flushed(a)
    await a.pump()
    long = a.cells[0]["id"]
    bridge = get_bridge(notebook.pk)
    await bridge.enqueue([long, "queued"], alice)
    await a.pump_until(lambda: any("long" in str(o) for o in outputs(a, 0)), timeout=30, what="the long run")
    assert bridge.channels is not None
    client = bridge.channels.client
    asked = asyncio.Event()
    restart_kernel = client.restart_kernel

    async def restart_kernel_and_say_so(kernel_id: str):
        asked.set()
        return await restart_kernel(kernel_id)

    client.restart_kernel = restart_kernel_and_say_so
    restarting = asyncio.create_task(bridge.restart(alice))
    await asked.wait()  # the server is restarting the kernel now
    await bridge.enqueue(["during"], alice)
    await restarting
    async with asyncio.timeout(60):
        await bridge.wait_idle()
    await a.pump()
    assert outputs(a, 0)[-1]["evalue"] == "The kernel was restarted while this cell was running."
    assert (outputs(a, 1), a.cells[1]["execution_state"]) == ([], "idle")  # queued before: cleared
    assert outputs(a, 2) == [{"output_type": "stream", "name": "stdout", "text": "sent during the restart\n"}]
    assert a.cells[2]["execution_count"] == 1  # by the new kernel
    await close_all(a)


async def test_two_runners_queueing_at_once_share_one_kernel(notebook, alice, bob):
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=bob, role=Role.RUNNER)
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "import time; time.sleep(0.2); shared = 'set by alice'; print('alice ran')")
    add_code_cell(a, "bobs", "print('bob sees', shared)")
    await flushed(a)
    await a.pump()
    first = a.cells[0]["id"]

    (status_a, _), (status_b, _) = await asyncio.gather(
        post(notebook.pk, alice, "run", {"cell_ids": [first]}),
        post(notebook.pk, bob, "run", {"cell_ids": ["bobs"]}),
    )
    assert status_a == status_b == 202
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    ran = sorted([(a.cells[0]["execution_count"], "alice"), (a.cells[1]["execution_count"], "bob")])
    assert [count for count, _ in ran] == [1, 2]  # one after the other, on one kernel
    if ran[0][1] == "alice":  # bob's cell saw alice's variable only if it ran second
        assert outputs(a, 1)[0]["text"] == "bob sees set by alice\n"
    rows = await database_sync_to_async(list)(
        AuditEvent.objects.filter(notebook_id=notebook.pk, action="cell.executed").values_list(
            "actor_id", "details"
        )
    )
    # (not `details__cell_id`: on SQLite a key lookup reads an id like "40e11672" as a number)
    events = [(actor, details["cell_id"]) for actor, details in rows]
    assert sorted(events) == sorted([(alice.pk, first), (bob.pk, "bobs")])
    await close_all(a)


async def test_a_dying_kernel_fails_the_cell_visibly(notebook, alice):
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "import os; os._exit(1)")
    await flushed(a)
    await a.pump()
    bridge = get_bridge(notebook.pk)
    await bridge.enqueue([a.cells[0]["id"]], alice)
    await bridge.wait_idle()
    await a.pump()
    [error] = outputs(a)
    assert error["output_type"] == "error"
    assert "died" in error["evalue"]
    await close_all(a)


async def test_runs_are_audited_with_code_and_actor(notebook, alice):
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "1 + 1")
    await flushed(a)
    await a.pump()
    cell_id = a.cells[0]["id"]
    status, _ = await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]})
    assert status == 202
    await get_bridge(notebook.pk).wait_idle()
    events = await database_sync_to_async(list)(
        AuditEvent.objects.filter(notebook_id=notebook.pk, action="cell.executed")
    )
    assert len(events) == 1
    assert events[0].actor_id == alice.pk
    assert events[0].details["code"] == "1 + 1"
    assert events[0].details["cell_id"] == cell_id
    assert events[0].details["status"] == "ok"
    assert len(events[0].details["code_sha256"]) == 64
    assert await database_sync_to_async(
        AuditEvent.objects.filter(notebook_id=notebook.pk, action="kernel.started").exists
    )()
    await close_all(a)


async def test_interrupt_stops_a_long_run_and_status_is_reported(notebook, alice):
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "import time; time.sleep(30)")
    await flushed(a)
    await a.pump()
    cell_id = a.cells[0]["id"]
    bridge = get_bridge(notebook.pk)
    await bridge.enqueue([cell_id], alice)
    await a.pump_until(lambda: bridge.status == "busy", timeout=30, what="the kernel to be busy")
    assert bridge.info()["running"] == cell_id
    status, _ = await post(notebook.pk, alice, "interrupt")
    assert status == 200
    await bridge.wait_idle()
    await a.pump()
    assert outputs(a)[-1]["ename"] == "KeyboardInterrupt"
    cookie = await database_sync_to_async(cookie_for)(alice)
    comm = HttpCommunicator(
        application,
        "GET",
        f"/n/{notebook.pk}/kernel/",
        headers=[(b"host", b"127.0.0.1:8000"), (b"cookie", cookie.encode())],
    )
    response = await comm.get_response(timeout=10)
    assert response["status"] == 200
    assert json.loads(response["body"])["running"] is None
    await close_all(a)


async def test_a_run_sent_over_the_websocket_is_answered_and_executed(notebook, alice, bob):
    from collab import protocol

    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=bob, role=Role.EDITOR)
    a = await joined(notebook.pk, alice, query="ext=1")
    b = await joined(notebook.pk, bob, query="ext=1")
    a.text().insert(0, "print(6 * 7)")
    await flushed(a)
    await a.pump()
    cell_id = a.cells[0]["id"]
    await b.comm.send_to(bytes_data=protocol.command(1, "run", {"cell_ids": [cell_id]}))
    await a.comm.send_to(bytes_data=protocol.command(7, "run", {"cell_ids": [cell_id]}))
    await a.comm.send_to(bytes_data=protocol.command(8, "run", {"cell_ids": "not a list"}))
    await a.pump_until(lambda: 7 in a.replies and 8 in a.replies, timeout=10, what="the replies to 7 and 8")
    await b.pump()
    assert b.replies[1]["status"] == 403  # an editor may not run
    assert a.replies[7] == {"id": 7, "status": 202, "body": {"queued": [cell_id]}}
    assert a.replies[8]["status"] == 400
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    await b.pump()
    assert outputs(b) == [{"output_type": "stream", "name": "stdout", "text": "42\n"}]
    executed = await database_sync_to_async(AuditEvent.objects.get)(action="cell.executed")
    assert executed.actor_id == alice.pk
    assert executed.details["code"] == "print(6 * 7)"
    await close_all(a, b)


async def test_a_stock_client_may_not_send_commands(notebook, alice):
    from collab import protocol

    a = await joined(notebook.pk, alice)
    await a.comm.send_to(bytes_data=protocol.command(1, "run", {"cell_ids": []}))
    await a.wait_closed()
    assert a.closed["code"] == 4400
