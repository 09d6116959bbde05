"""input() and idle shutdown through the real ASGI app, a real Jupyter Server and ipykernel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator

from config.asgi import application
from kernels.bridge import BRIDGES, get_bridge
from kernels.jupyter import JupyterClient
from kernels.local_server import LocalJupyterServer
from notebooks.models import Grant, Role
from tests.support.cast import cookie_for
from tests.support.consumer import close_all, flushed, joined
from tests.support.kernels import outputs, post
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def kernel_settings(settings, jupyter_server: LocalJupyterServer) -> AsyncIterator[None]:
    settings.JUPYTER_SERVER_URL = jupyter_server.url
    settings.JUPYTER_SERVER_TOKEN = jupyter_server.token
    yield
    for bridge in list(BRIDGES.values()):
        await bridge.shutdown()


async def status_of(notebook_id, user) -> dict:
    cookie = await database_sync_to_async(cookie_for)(user)
    headers = [(b"host", b"127.0.0.1:8000"), (b"cookie", cookie.encode())]
    comm = HttpCommunicator(application, "GET", f"/n/{notebook_id}/kernel/", headers=headers)
    response = await comm.get_response(timeout=10)
    assert response["status"] == 200
    return json.loads(response["body"])


async def a_cell(notebook, user, source: str):
    client = await joined(notebook.pk, user)
    client.text().insert(0, source)
    await flushed(client)
    await client.pump()
    return client, client.cells[0]["id"]


async def test_it_asks_the_person_who_ran_the_cell_and_only_they_can_answer(notebook, alice, bob):
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=bob, role=Role.RUNNER)
    a, cell_id = await a_cell(notebook, alice, 'name = input("Name? ")\nprint("hi", name)')
    assert (await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]}))[0] == 202

    async def asked() -> bool:
        return (await status_of(notebook.pk, bob))["input"] is not None

    await eventually_async(asked, timeout=20, what="the input request")
    state = await status_of(notebook.pk, bob)
    assert state["input"] == {
        "cell_id": cell_id,
        "prompt": "Name? ",
        "password": False,
        "for_user": f"u:{alice.pk}",
    }
    assert state["running"] == cell_id

    status, body = await post(notebook.pk, bob, "input", {"value": "Mallory"})
    assert status == 403
    assert "Only the person who ran this cell" in body["error"]
    status, body = await post(notebook.pk, alice, "input", {"value": "Ada 😀"})
    assert status == 200
    assert body["input"] is None
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    assert outputs(a) == [{"output_type": "stream", "name": "stdout", "text": "Name? Ada 😀\nhi Ada 😀\n"}]
    assert (await post(notebook.pk, alice, "input", {"value": "late"}))[0] == 409
    await close_all(a)


async def test_a_password_answer_is_not_written_into_the_notebook(notebook, alice):
    a, cell_id = await a_cell(
        notebook, alice, 'import getpass\nsecret = getpass.getpass("Key: ")\nlen(secret)'
    )
    await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]})
    bridge = get_bridge(notebook.pk)

    await eventually_async(lambda: bridge.input is not None, timeout=20, what="the input request")
    assert bridge.info()["input"]["password"] is True
    assert (await post(notebook.pk, alice, "input", {"value": "hunter22"}))[0] == 200
    await bridge.wait_idle()
    await a.pump()
    texts = json.dumps(outputs(a))
    assert "hunter22" not in texts
    assert outputs(a)[-1]["data"]["text/plain"] == "8"
    await close_all(a)


async def test_an_unanswered_input_fails_the_cell_with_a_message(notebook, alice, settings):
    settings.KERNEL_INPUT_TIMEOUT = 0.5
    a, cell_id = await a_cell(notebook, alice, 'answer = input("Continue? ")')
    await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]})
    bridge = get_bridge(notebook.pk)
    async with asyncio.timeout(20):
        await bridge.wait_idle()
    await a.pump()
    stderr, error = outputs(a)
    assert stderr["name"] == "stderr"
    assert "No answer to input() within 0.5 seconds" in stderr["text"]
    assert error["ename"] == "KeyboardInterrupt"
    assert bridge.info()["input"] is None
    # the kernel is fine afterwards
    text = a.text()
    del text[0 : len(str(text))]
    text.insert(0, "print('still here')")
    await flushed(a)
    await a.pump()
    await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]})
    await bridge.wait_idle()
    await a.pump()
    assert outputs(a) == [{"output_type": "stream", "name": "stdout", "text": "still here\n"}]
    await close_all(a)


async def test_an_idle_kernel_is_shut_down(notebook, alice, settings, jupyter_server):
    settings.KERNEL_IDLE_SHUTDOWN = 0.5
    a, cell_id = await a_cell(notebook, alice, "x = 1")
    await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]})
    bridge = get_bridge(notebook.pk)
    await bridge.wait_idle()
    kernel_id = bridge.kernel_id
    assert kernel_id is not None

    async with JupyterClient(jupyter_server.url, jupyter_server.token) as client:

        async def gone() -> bool:
            return await client.get_kernel(kernel_id) is None

        await eventually_async(gone, timeout=10, what="the idle kernel to be shut down")
    assert str(notebook.pk) not in BRIDGES
    state = await status_of(notebook.pk, alice)
    assert state["status"] == "not started"
    assert "shut down after 0.5 seconds without runs" in bridge.info()["message"]
    await a.pump()
    await close_all(a)
