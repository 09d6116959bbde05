"""The bridge against a REAL Jupyter Server + ipykernel (started once per run). # no Django

Each test runs code through `KernelChannels`, writes what comes back into a YNotebook doc with
`OutputWriter`, and checks the notebook that `YNotebook.get()` returns.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import nbformat
import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Doc

from kernels.execution import Event, Finished, KernelLost, Output
from kernels.jupyter import JupyterClient, KernelChannels
from kernels.local_server import LocalJupyterServer
from kernels.outputs import OutputWriter
from tests.support.waiting import eventually_async

TINY_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
    )
).decode()


class Cell:
    """One code cell in its own notebook doc, fed by the events of one channel connection."""

    def __init__(self, channels: KernelChannels) -> None:
        self.channels = channels
        self.doc = Doc()
        YNotebook(self.doc).set(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "id": "c1",
                        "source": "",
                        "metadata": {},
                        "outputs": [],
                        "execution_count": None,
                    }
                ],
                "metadata": {},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
        self.writer = OutputWriter(self.doc)
        self.events: AsyncIterator[Event] = channels.events()

    async def run(self, code: str, timeout: float = 20) -> Event:
        """Execute and write outputs until the execution finishes or is lost."""
        msg_id = await self.channels.execute(code)
        return await self.wait(msg_id, timeout)

    async def wait(self, msg_id: str, timeout: float = 20) -> Event:
        async with asyncio.timeout(timeout):
            async for event in self.events:
                if isinstance(event, Output) and event.msg_id == msg_id:
                    with self.doc.transaction(origin="kernel"):
                        self.writer.apply("c1", event.msg)
                elif isinstance(event, Finished) and event.msg_id == msg_id:
                    return event
                elif isinstance(event, KernelLost) and msg_id in event.msg_ids:
                    with self.doc.transaction(origin="kernel"):
                        self.writer.fail("c1", "Kernel died while running this cell")
                    return event
        raise AssertionError("unreachable")

    async def started(self, msg_id: str, timeout: float = 10) -> None:
        """Handle events until the kernel has begun `msg_id` (its first output, execute_input)."""
        async with asyncio.timeout(timeout):
            async for event in self.events:
                if isinstance(event, Output) and event.msg_id == msg_id:
                    with self.doc.transaction(origin="kernel"):
                        self.writer.apply("c1", event.msg)
                    return

    def notebook_cell(self) -> dict[str, Any]:
        notebook = YNotebook(self.doc).get()
        nbformat.validate(nbformat.from_dict(notebook))
        return dict(notebook["cells"][0])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.notebook_cell()["outputs"])


@pytest.fixture
async def client(jupyter_server: LocalJupyterServer) -> AsyncIterator[JupyterClient]:
    async with JupyterClient(jupyter_server.url, jupyter_server.token) as client:
        yield client


@pytest.fixture
async def cell(client: JupyterClient, shared_kernel: str) -> AsyncIterator[Cell]:
    async with client.channels(shared_kernel) as channels:
        yield Cell(channels)


@pytest.fixture
async def fresh_cell(client: JupyterClient) -> AsyncIterator[Cell]:
    """A cell on a kernel of its own, for tests that crash or restart it."""
    kernel = await client.start_kernel("python3")
    try:
        async with client.channels(kernel["id"]) as channels:
            yield Cell(channels)
    finally:
        await client.shutdown_kernel(kernel["id"])


async def test_it_lists_kernelspecs_and_kernels(client: JupyterClient, shared_kernel: str) -> None:
    specs = await client.kernelspecs()
    assert "python3" in specs["kernelspecs"]
    assert shared_kernel in [k["id"] for k in await client.list_kernels()]
    assert (await client.get_kernel(shared_kernel) or {})["id"] == shared_kernel
    assert await client.get_kernel("00000000-0000-0000-0000-000000000000") is None


async def test_it_prints_and_counts(cell: Cell) -> None:
    finished = await cell.run("print('hello 😀 中文')\n6 * 7")
    assert isinstance(finished, Finished)
    assert finished.status == "ok"
    result = cell.notebook_cell()
    assert result["outputs"][0] == {"output_type": "stream", "name": "stdout", "text": "hello 😀 中文\n"}
    assert result["outputs"][1]["data"] == {"text/plain": "42"}
    assert result["execution_count"] == result["outputs"][1]["execution_count"] >= 1


async def test_it_displays_an_image(cell: Cell) -> None:
    code = (
        "import base64\nfrom IPython.display import Image, display\n"
        f"display(Image(data=base64.b64decode('{TINY_PNG}')))"
    )
    assert isinstance(await cell.run(code), Finished)
    assert cell.outputs[0]["output_type"] == "display_data"
    assert cell.outputs[0]["data"]["image/png"].strip() == TINY_PNG


async def test_it_updates_a_display(cell: Cell) -> None:
    code = "h = display('first', display_id=True)\nprint('between')\nh.update('second ✨')"
    assert isinstance(await cell.run(code), Finished)
    assert cell.outputs[0]["data"] == {"text/plain": "'second ✨'"}
    assert cell.outputs[1]["text"] == "between\n"


async def test_it_rewrites_progress_lines(cell: Cell) -> None:
    code = (
        "import sys, time\n"
        "for i in range(6):\n"
        "    sys.stdout.write(f'\\r{i*20:3d}%|' + '█' * i + ' 😀 进度')\n"
        "    sys.stdout.flush()\n"
        "    time.sleep(0.05)\n"
        "print()\nprint('done')"
    )
    assert isinstance(await cell.run(code), Finished)
    assert cell.outputs == [{"output_type": "stream", "name": "stdout", "text": "100%|█████ 😀 进度\ndone\n"}]


async def test_it_clears_output_when_asked_to_wait(cell: Cell) -> None:
    code = (
        "from IPython.display import clear_output\nimport time\n"
        "for i in range(3):\n    clear_output(wait=True)\n    print(f'frame {i} 🎞', flush=True)\n"
        "    time.sleep(0.05)"
    )
    assert isinstance(await cell.run(code), Finished)
    assert cell.outputs == [{"output_type": "stream", "name": "stdout", "text": "frame 2 🎞\n"}]


async def test_it_shows_errors_with_ansi(cell: Cell) -> None:
    finished = await cell.run("1/0")
    assert isinstance(finished, Finished)
    assert finished.status == "error"
    error = cell.outputs[0]
    assert (error["output_type"], error["ename"]) == ("error", "ZeroDivisionError")
    assert any("\x1b[" in line for line in error["traceback"])


async def test_it_caps_a_20_mb_output(cell: Cell) -> None:
    finished = await cell.run("print('😀' + 'x' * 20_000_000 + 'END')", timeout=40)
    assert isinstance(finished, Finished)
    text = cell.outputs[0]["text"]
    assert len(text.encode()) <= 1_000_000
    assert text.startswith("😀xxx")
    assert text.endswith("xxEND\n")
    assert "bytes cut here" in text


async def test_it_interrupts_a_sleep(cell: Cell, client: JupyterClient, shared_kernel: str) -> None:
    msg_id = await cell.channels.execute("import time; time.sleep(60)")
    await cell.started(msg_id)
    await client.interrupt_kernel(shared_kernel)
    finished = await cell.wait(msg_id, timeout=10)
    assert isinstance(finished, Finished)
    assert finished.status == "error"
    assert cell.outputs[-1]["ename"] == "KeyboardInterrupt"


async def test_it_reports_a_crashed_kernel_as_lost(fresh_cell: Cell) -> None:
    lost = await fresh_cell.run("import os; os._exit(1)")
    assert isinstance(lost, KernelLost)
    assert lost.state in ("restarting", "dead")
    assert fresh_cell.outputs[-1]["evalue"] == "Kernel died while running this cell"
    again = await fresh_cell.run("'back'", timeout=30)  # the server restarted it
    assert isinstance(again, Finished)


async def test_it_restarts_a_kernel(fresh_cell: Cell) -> None:
    await fresh_cell.run("x = 1")
    msg_id = await fresh_cell.channels.execute("import time; time.sleep(60)")
    await fresh_cell.started(msg_id)
    lost = await fresh_cell.channels.restart()
    assert lost is not None
    assert lost.msg_ids == (msg_id,)
    finished = await fresh_cell.run("x", timeout=30)
    assert isinstance(finished, Finished)
    assert finished.status == "error"
    assert fresh_cell.outputs[-1]["ename"] == "NameError"


async def test_the_first_output_after_a_restart_is_not_lost(fresh_cell: Cell) -> None:
    # The server's iopub subscription reaches a restarted kernel some time after the restart;
    # a run sent at once must still get its output (the channels hold it until iopub is back).
    for attempt in range(3):
        await fresh_cell.channels.restart()
        finished = await fresh_cell.run(f"print('after restart {attempt}')", timeout=30)
        assert isinstance(finished, Finished)
        assert fresh_cell.outputs[-1]["text"].endswith(f"after restart {attempt}\n")


async def test_a_run_sent_while_the_kernel_restarts_runs_on_the_new_kernel(fresh_cell: Cell) -> None:
    # A restart fails only what was sent before it: a run sent while the server is still
    # restarting the kernel is held, runs on the new kernel, and keeps its output.
    channels = fresh_cell.channels
    asked = asyncio.Event()
    restart_kernel = channels.client.restart_kernel

    async def restart_kernel_slowly(kernel_id: str) -> dict[str, Any]:
        asked.set()
        return await restart_kernel(kernel_id)

    channels.client.restart_kernel = restart_kernel_slowly
    restarting = asyncio.create_task(channels.restart())
    await asked.wait()
    finished = await fresh_cell.run("import os; print('ran', os.getpid())", timeout=30)
    assert await restarting is None  # nothing was running when the restart was asked for
    assert isinstance(finished, Finished)
    assert finished.status == "ok"
    assert fresh_cell.outputs[-1]["text"].startswith("ran ")
    assert fresh_cell.notebook_cell()["execution_count"] == 1  # the new kernel ran it


async def test_it_replays_what_was_buffered_after_reconnecting(
    client: JupyterClient, shared_kernel: str
) -> None:
    channels = client.channels(shared_kernel)
    await channels.open()
    cell = Cell(channels)
    msg_id = await channels.execute("import time; time.sleep(0.5); print('while you were away 👋')")
    await cell.started(msg_id)
    await cell.events.aclose()
    await channels.close()  # the print happens while no socket is open

    async def idle() -> bool:  # the server saw the run end (it had seen it start: execute_input)
        return (await client.get_kernel(shared_kernel) or {}).get("execution_state") == "idle"

    await eventually_async(idle, timeout=20, what="the run to end while no socket was open")
    await channels.open()  # same session id: the server replays its buffer
    cell.events = channels.events()
    finished = await cell.wait(msg_id)
    await channels.close()
    assert isinstance(finished, Finished)
    assert cell.outputs == [{"output_type": "stream", "name": "stdout", "text": "while you were away 👋\n"}]


async def test_it_reconnects_by_itself_after_a_drop(cell: Cell) -> None:
    msg_id = await cell.channels.execute("import time; time.sleep(0.3); print('still here')")
    await cell.channels.disconnect()
    finished = await cell.wait(msg_id)
    assert isinstance(finished, Finished)
    assert cell.outputs == [{"output_type": "stream", "name": "stdout", "text": "still here\n"}]
