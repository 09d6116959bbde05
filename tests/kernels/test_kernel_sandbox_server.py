"""The sandboxed local Jupyter Server on its own (no app): homes, interrupts, the network
setting and what the sandbox refuses to start without. # no Django"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kernels import local_server
from kernels.execution import Finished, KernelLost, Output
from kernels.jupyter import JupyterClient, KernelChannels
from kernels.local_server import LocalJupyterServer, Sandbox, SandboxUnavailable

pytestmark = pytest.mark.processes


async def run(channels: KernelChannels, code: str, timeout: float = 30) -> tuple[str, object]:
    """Execute `code`; returns (stream text and error names, the final event)."""
    msg_id = await channels.execute(code)
    out: list[str] = []
    async with asyncio.timeout(timeout):
        async for event in channels.events():
            if isinstance(event, Output) and event.msg_id == msg_id:
                content = event.msg["content"]
                out.append(content.get("text", "") or content.get("ename", ""))
            elif isinstance(event, Finished | KernelLost) and (
                getattr(event, "msg_id", None) == msg_id or msg_id in getattr(event, "msg_ids", ())
            ):
                return "".join(out), event
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def networked() -> Iterator[LocalJupyterServer]:
    with LocalJupyterServer(sandbox=Sandbox(network=True)) as server:
        yield server


@pytest.fixture
async def client(jupyter_server: LocalJupyterServer) -> AsyncIterator[JupyterClient]:
    async with JupyterClient(jupyter_server.url, jupyter_server.token) as client:
        yield client


async def test_a_notebooks_home_outlives_a_kernel_restart_and_a_new_kernel(client, jupyter_server):
    kernel = await client.start_kernel("python3", path="notebook-home-1")
    try:
        async with client.channels(kernel["id"]) as channels:
            out, _ = await run(channels, "open('kept.txt', 'w').write('kept'); import os; print(os.getcwd())")
            assert out == "/home/notebook\n"
            await client.restart_kernel(kernel["id"])
        async with client.channels(kernel["id"]) as channels:
            out, _ = await run(channels, "print(open('kept.txt').read())")
            assert out == "kept\n"
    finally:
        await client.shutdown_kernel(kernel["id"])
    assert (jupyter_server.root_dir / "notebook-home-1" / "kept.txt").read_text() == "kept"
    kernel = await client.start_kernel("python3", path="notebook-home-1")  # a new kernel, same home
    try:
        async with client.channels(kernel["id"]) as channels:
            out, _ = await run(channels, "print(open('kept.txt').read())")
            assert out == "kept\n"
    finally:
        await client.shutdown_kernel(kernel["id"])


async def test_an_interrupt_stops_the_cell_not_the_kernel(client):
    kernel = await client.start_kernel("python3", path="notebook-interrupt")
    try:
        async with client.channels(kernel["id"]) as channels:
            await run(channels, "x = 41")
            msg_id = await channels.execute("import time; print('go', flush=True); time.sleep(60)")
            interrupted = False
            async with asyncio.timeout(20):
                async for event in channels.events():
                    if isinstance(event, Output) and event.msg_id == msg_id and not interrupted:
                        await client.interrupt_kernel(kernel["id"])  # the sleep is under way
                        interrupted = True
                    elif isinstance(event, Finished) and event.msg_id == msg_id:
                        break
            assert event.status == "error"
            out, _ = await run(channels, "print(x + 1)")
            assert out == "42\n"  # same kernel, variables kept
    finally:
        await client.shutdown_kernel(kernel["id"])


async def test_the_network_setting_lets_kernels_reach_out(networked, jupyter_server):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (
            f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close(); print('ok')"
        )
        for server, expected in ((networked, "ok\n"), (jupyter_server, "ConnectionRefusedError")):
            async with JupyterClient(server.url, server.token) as client:
                kernel = await client.start_kernel("python3")
                try:
                    async with client.channels(kernel["id"]) as channels:
                        out, _ = await run(channels, code)
                        assert out == expected
                finally:
                    await client.shutdown_kernel(kernel["id"])


def test_the_sandbox_refuses_to_start_without_its_tools(monkeypatch):
    monkeypatch.setattr(local_server.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="bwrap, prlimit, setpriv"):
        LocalJupyterServer(sandbox=Sandbox()).start()


def test_the_sandbox_refuses_to_start_without_root(monkeypatch):
    monkeypatch.setattr(local_server.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable, match="needs the local Jupyter Server to run as root"):
        LocalJupyterServer(sandbox=Sandbox()).start()


def test_the_token_is_not_on_any_command_line(jupyter_server):
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert jupyter_server.token.encode() not in cmdline
