"""The client and the kernel bridge against a real Jupyter Enterprise Gateway, started from
`.venv-gateway` (see the `enterprise_gateway` fixture; missing, the tests fail, not skip)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from kernels.bridge import BRIDGES, get_bridge
from kernels.execution import Finished, KernelLost, Output
from kernels.jupyter import JupyterClient
from notebooks import actions
from tests.support.consumer import close_all, flushed, joined
from tests.support.kernels import outputs, post, runs_a_kernel_start_to_end
from tests.support.waiting import eventually_async


async def test_it_runs_code_on_enterprise_gateway(enterprise_gateway: tuple[str, str]) -> None:
    await runs_a_kernel_start_to_end(*enterprise_gateway)


async def test_it_replays_what_it_buffered_while_no_socket_was_open(
    enterprise_gateway: tuple[str, str], tmp_path: Path
) -> None:
    """A worker that lost its socket (or died) resumes with the same session id."""
    done = tmp_path / "printed"
    code = (
        "import sys, time; time.sleep(0.5); print('while you were away 👋'); sys.stdout.flush();"
        f" open({str(done)!r}, 'w')"
    )
    async with JupyterClient(*enterprise_gateway) as client:
        kernel = await client.start_kernel()
        try:
            channels = client.channels(kernel["id"])
            await channels.open()
            msg_id = await channels.execute(code)
            async with asyncio.timeout(20):  # a new connection sends the run once iopub answers
                async for msg in channels.messages():
                    if msg["msg_type"] == "execute_input" and msg["parent_header"].get("msg_id") == msg_id:
                        break
            await channels.close()
            await eventually_async(done.exists, timeout=20, what="the print while no socket was open")
            async with asyncio.timeout(20):
                await channels.open()
                texts = []
                async for event in channels.events():
                    if isinstance(event, Output) and event.msg["msg_type"] == "stream":
                        texts.append(event.msg["content"]["text"])
                    if isinstance(event, Finished | KernelLost):
                        break
            await channels.close()
            assert texts == ["while you were away 👋\n"]
            assert isinstance(event, Finished)
            assert event.msg_id == msg_id
        finally:
            await client.shutdown_kernel(kernel["id"])


@pytest.fixture
async def on_enterprise_gateway(settings, enterprise_gateway: tuple[str, str]) -> AsyncIterator[None]:
    """The default kernel server is the gateway."""
    settings.JUPYTER_SERVER_URL, settings.JUPYTER_SERVER_TOKEN = enterprise_gateway
    yield
    for bridge in list(BRIDGES.values()):
        await bridge.shutdown()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_enterprise_gateway")
async def test_a_cell_runs_on_enterprise_gateway_end_to_end(notebook, alice, enterprise_gateway):
    a = await joined(notebook.pk, alice)
    a.text().insert(0, 'print("on the gateway 😀")\n1/0')
    await flushed(a)
    await a.pump()
    cell_id = a.cells[0]["id"]

    status, body = await post(notebook.pk, alice, "run", {"cell_ids": [cell_id]})
    assert (status, body) == (202, {"queued": [cell_id]})
    bridge = get_bridge(notebook.pk)
    await bridge.wait_idle()
    await a.pump()
    stream, error = outputs(a)
    assert stream == {"output_type": "stream", "name": "stdout", "text": "on the gateway 😀\n"}
    assert (error["output_type"], error["ename"]) == ("error", "ZeroDivisionError")
    assert a.cells[0]["execution_count"] == 1

    kernel_id = bridge.kernel_id
    await close_all(a)
    await bridge.shutdown()
    nb = await database_sync_to_async(actions.current_notebook)(notebook.pk)
    assert nb.cells[0].outputs[0]["text"] == "on the gateway 😀\n"
    async with JupyterClient(*enterprise_gateway) as client:
        assert await client.get_kernel(kernel_id) is None
