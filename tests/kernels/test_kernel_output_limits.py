"""An output too large to keep, end to end (real Jupyter Server + ipykernel, the real ASGI app):
the cell says so, the kernel keeps answering, and nobody holds the output in memory.

Two bounds, one behaviour: the local server reads kernel messages up to 32 MB (kernels.sandbox),
the bridge reads websocket frames up to `KERNEL_MAX_FRAME_BYTES` (a server without a message
limit, as other people's servers may be)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from kernels.bridge import BRIDGES, get_bridge
from kernels.local_server import LocalJupyterServer, Sandbox
from tests.support.consumer import close_all, flushed, joined
from tests.support.kernels import add_code_cell, outputs
from tests.support.processes import peak_rss_mb, reset_peak_rss

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def unbounded_server() -> Iterator[LocalJupyterServer]:
    """A server that passes on kernel messages of any size (as stock Jupyter Server does)."""
    with LocalJupyterServer(sandbox=Sandbox(max_message_mb=1024)) as server:
        yield server


def use(settings, server: LocalJupyterServer) -> None:
    settings.JUPYTER_SERVER_URL = server.url
    settings.JUPYTER_SERVER_TOKEN = server.token


@pytest.fixture(autouse=True)
async def shut_bridges() -> AsyncIterator[None]:
    yield
    async with asyncio.timeout(60):  # a shutdown that hangs fails the test instead of the run
        for bridge in list(BRIDGES.values()):
            await bridge.shutdown()


async def run_big_then_small(notebook, alice, big_code: str) -> tuple[list[dict], list[dict]]:
    """Run a cell with `big_code`, then one printing "ok"; both cells' outputs."""
    a = await joined(notebook.pk, alice)
    a.text().insert(0, big_code)
    add_code_cell(a, "next", "print('ok')")
    await flushed(a)
    await a.pump()
    bridge = get_bridge(notebook.pk)
    await bridge.enqueue([a.cells[0]["id"], "next"], alice)
    async with asyncio.timeout(120):
        await bridge.wait_idle()
    await a.pump_until(lambda: outputs(a, 1), what="the next cell's output")
    result = outputs(a, 0), outputs(a, 1)
    await close_all(a)
    return result


async def test_an_output_over_the_servers_message_limit_says_so_and_the_kernel_keeps_answering(
    notebook, alice, jupyter_server, settings
):
    use(settings, jupyter_server)
    big, after = await run_big_then_small(notebook, alice, "print('x' * (40 << 20))")
    assert after == [{"output_type": "stream", "name": "stdout", "text": "ok\n"}]
    [error] = big
    assert error["output_type"] == "error"
    assert error["ename"] == "OutputTooLarge"
    assert error["evalue"] == "Output of more than 32 MB exceeds the limit of 32 MB and was not kept."


async def test_an_output_over_the_bridges_frame_limit_says_so_and_costs_the_worker_little(
    notebook, alice, unbounded_server, settings
):
    use(settings, unbounded_server)
    before = reset_peak_rss(os.getpid())
    big, after = await run_big_then_small(notebook, alice, "print('x' * (200 << 20))")
    grown = peak_rss_mb(os.getpid()) - before
    assert after == [{"output_type": "stream", "name": "stdout", "text": "ok\n"}]
    [error] = big
    assert error["output_type"] == "error"
    assert error["ename"] == "OutputTooLarge"
    assert error["evalue"] == "Output of 200 MB exceeds the limit of 48 MB and was not kept."
    assert grown < 64, f"the worker grew by {grown:.0f} MB"


async def test_a_reply_over_the_servers_message_limit_says_so_and_the_kernel_keeps_answering(
    notebook, alice, jupyter_server, settings
):
    """An execute_reply carries a run's payloads: a 40 MB `set_next_input` made it larger than
    the server reads, and ZMQ ended the kernel's shell connection with it."""
    use(settings, jupyter_server)
    code = "get_ipython().set_next_input('x' * (40 << 20))"
    big, after = await run_big_then_small(notebook, alice, code)
    assert after == [{"output_type": "stream", "name": "stdout", "text": "ok\n"}]
    [error] = big
    assert error["output_type"] == "error"
    assert error["ename"] == "OutputTooLarge"
    assert error["evalue"] == "Output of more than 32 MB exceeds the limit of 32 MB and was not kept."


async def test_a_prompt_over_the_servers_message_limit_is_answered_empty_and_the_kernel_keeps_answering(
    notebook, alice, jupyter_server, settings
):
    """`input()` with a 40 MB prompt: the kernel waited for good for an answer to a question
    nobody saw."""
    use(settings, jupyter_server)
    code = "answer = input('x' * (40 << 20))\nprint(repr(answer))"
    big, after = await run_big_then_small(notebook, alice, code)
    assert after == [{"output_type": "stream", "name": "stdout", "text": "ok\n"}]
    error, printed = big
    assert error["output_type"] == "error"
    assert error["ename"] == "PromptTooLarge"
    assert "an empty line was given as the answer" in error["evalue"]
    assert printed == {"output_type": "stream", "name": "stdout", "text": "''\n"}
