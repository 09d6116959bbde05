"""The kernel server killed (SIGKILL) while a cell runs and another waits: both cells say why,
the notebook stays editable, the kernel status says so, and the next run gets a fresh kernel:
- a registered (remote) server: a clear error until it is back, then a new kernel;
- the local server `manage.py serve` owns: restarted by itself, on the same URL and token.
Each test has a server of its own (the session's shared one must survive)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import httpx
import pytest

from kernels.bridge import BRIDGES, get_bridge
from kernels.local_server import LocalJupyterServer
from tests.support.consumer import close_all, flushed, joined
from tests.support.kernels import add_code_cell, outputs

pytestmark = pytest.mark.django_db(transaction=True)

LONG_RUN = "import time; print('started', flush=True); time.sleep(600)"


@pytest.fixture
async def server(settings) -> AsyncIterator[LocalJupyterServer]:
    server = LocalJupyterServer()
    await asyncio.to_thread(server.start)
    settings.JUPYTER_SERVER_URL = server.url
    settings.JUPYTER_SERVER_TOKEN = server.token
    yield server
    async with asyncio.timeout(60):
        for bridge in list(BRIDGES.values()):
            await bridge.shutdown()
    await asyncio.to_thread(server.stop)


async def answers(server: LocalJupyterServer) -> bool:
    headers = {"Authorization": f"token {server.token}"}
    try:
        async with httpx.AsyncClient(headers=headers, timeout=2) as http:
            return (await http.get(f"{server.url}/api/status")).status_code == 200
    except httpx.HTTPError:
        return False


async def kill_while_running(notebook, alice, server: LocalJupyterServer):
    """Run a long cell with one queued behind it, SIGKILL the server mid-run; the client."""
    a = await joined(notebook.pk, alice)
    a.text().insert(0, LONG_RUN)
    add_code_cell(a, "waiting", "print('second')")
    await flushed(a)
    await a.pump()
    bridge = get_bridge(notebook.pk)
    await bridge.enqueue([a.cells[0]["id"], "waiting"], alice)
    await a.pump_until(lambda: any("started" in str(o) for o in outputs(a, 0)), what="the run's first output")
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    async with asyncio.timeout(30):
        await bridge.wait_idle()
    await a.pump()
    return a, bridge


def assert_cells_say_why(a) -> None:
    assert [c.get("execution_state") for c in a.cells] == ["idle", "idle"]
    for index in (0, 1):
        error = outputs(a, index)[-1]
        assert error["output_type"] == "error", (index, outputs(a, index))
        assert "kernel server" in error["evalue"], error["evalue"]


async def assert_still_editable(notebook, alice, a) -> None:
    a.text().insert(0, "# still editable\n")
    await flushed(a)
    b = await joined(notebook.pk, alice)
    assert str(b.cells[0]["source"]).startswith("# still editable\n")
    await close_all(b)


async def test_a_killed_remote_server_fails_the_cells_then_a_fresh_kernel_runs(notebook, alice, server):
    a, bridge = await kill_while_running(notebook, alice, server)
    assert_cells_say_why(a)
    assert bridge.info()["status"] == "dead"
    assert "kernel server" in bridge.info()["message"]
    await assert_still_editable(notebook, alice, a)

    first = a.cells[0]["id"]
    await bridge.enqueue(["waiting", first], alice)  # the server is still down: a clear error
    async with asyncio.timeout(30):
        await bridge.wait_idle()
    await a.pump()
    assert "kernel server could not be reached" in bridge.info()["message"]
    for index in (1, 0):  # the cell queued behind the first says so too (it was dropped silently)
        assert outputs(a, index)[-1]["evalue"].startswith("Could not run"), outputs(a, index)
    assert bridge.info()["status"] == "not started"

    await asyncio.to_thread(server.restart)  # back (same URL and token): a new kernel
    await bridge.enqueue(["waiting"], alice)
    async with asyncio.timeout(60):
        await bridge.wait_idle()
    await a.pump()
    assert outputs(a, 1) == [{"output_type": "stream", "name": "stdout", "text": "second\n"}]
    assert a.cells[1]["execution_count"] == 1  # a fresh kernel
    await close_all(a)


async def test_the_local_server_is_restarted_by_itself_for_the_next_run(notebook, alice, server):
    server.keep_running(interval=0.2)
    a, bridge = await kill_while_running(notebook, alice, server)
    assert_cells_say_why(a)
    await assert_still_editable(notebook, alice, a)

    async with asyncio.timeout(60):
        while not await answers(server):  # restarted on the URL and token the app holds
            await asyncio.sleep(0.1)
    await bridge.enqueue(["waiting"], alice)
    async with asyncio.timeout(60):
        await bridge.wait_idle()
    await a.pump()
    assert outputs(a, 1) == [{"output_type": "stream", "name": "stdout", "text": "second\n"}]
    await close_all(a)
