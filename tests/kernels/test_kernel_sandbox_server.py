"""The sandboxed local Jupyter Server on its own (no app): homes, interrupts, the network
setting and what the sandbox refuses to start without. # no Django"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from kernels import local_server
from kernels.execution import Finished, Output
from kernels.jupyter import JupyterClient
from kernels.local_server import LocalJupyterServer, Sandbox, SandboxUnavailable
from tests.support.kernels import run_code as run

pytestmark = pytest.mark.processes


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


def test_the_sandbox_refuses_a_home_quota_counted_every_0_seconds():
    with pytest.raises(SandboxUnavailable, match="KERNEL_HOME_QUOTA_INTERVAL must be a number of seconds"):
        LocalJupyterServer(sandbox=Sandbox(quota_interval=0)).start()


def test_the_token_is_not_on_any_command_line(jupyter_server):
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert jupyter_server.token.encode() not in cmdline


@pytest.fixture(scope="module")
def small() -> Iterator[LocalJupyterServer]:
    """A server whose kernels get 512 MiB in all."""
    with LocalJupyterServer(sandbox=Sandbox(memory_mb=512)) as server:
        yield server


async def start(server: LocalJupyterServer, client: JupyterClient) -> str:
    return str((await client.start_kernel("python3", path="attacker"))["id"])


async def test_a_kernel_cannot_make_the_server_touch_a_file_through_its_connection_file(
    client, jupyter_server, tmp_path
):
    canary = tmp_path / "canary"
    canary.write_text("root only")
    canary.chmod(0o600)
    kernel = await start(jupyter_server, client)
    try:
        async with client.channels(kernel) as channels:
            code = (
                "import os, sys\n"
                "cf = sys.argv[-1]\n"
                "try:\n"
                "    os.remove(cf)\n"
                f"    os.symlink({str(canary)!r}, cf)\n"
                "    print('swapped')\n"
                "except OSError as exc:\n"
                "    print(type(exc).__name__)\n"
            )
            out, _ = await run(channels, code)
            assert out == "PermissionError\n"
        await client.restart_kernel(kernel)
        async with client.channels(kernel) as channels:
            out, _ = await run(channels, "print(6 * 7)")
            assert out == "42\n"
    finally:
        await client.shutdown_kernel(kernel)
    info = canary.stat()
    assert (info.st_uid, oct(info.st_mode)[-3:], canary.read_text()) == (0, "600", "root only")


async def test_the_server_does_not_follow_a_kernels_symlink_to_a_socket_of_the_host(
    client, jupyter_server, tmp_path
):
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host.bind(str(tmp_path / "host.sock"))
    host.listen()
    host.setblocking(False)
    kernel = await start(jupyter_server, client)
    try:
        async with client.channels(kernel) as channels:
            code = (
                "import json, os, sys\n"
                "info = json.load(open(sys.argv[-1]))\n"
                "for name in ('iopub_port', 'shell_port'):\n"
                "    path = f\"{info['ip']}-{info[name]}\"\n"
                "    os.remove(path)\n"
                f"    os.symlink({str(tmp_path / 'host.sock')!r}, path)\n"
                "print('planted')\n"
            )
            out, _ = await run(channels, code)
            assert out == "planted\n"
        # A new connection makes the server open new sockets to the kernel's paths.
        channels = client.channels(kernel)
        with contextlib.suppress(Exception):  # the kernel broke its own channels
            async with asyncio.timeout(5):
                await channels.open()
                await run(channels, "1", timeout=3)
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):  # nothing ever connected to the host's socket
            await asyncio.wait_for(loop.sock_accept(host), 1.0)
    finally:
        host.close()
        await client.shutdown_kernel(kernel)
    # Closed after the shutdown, which ends the server's side: before, the server never
    # answered the close (its channels to the kernel broken) and it took websockets' 10 s timeout.
    await channels.close()


async def test_a_huge_message_from_a_kernel_does_not_grow_the_server(client, jupyter_server):
    server = psutil.Process(jupyter_server.pid)
    before, peak = server.memory_info().rss, [0]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], server.memory_info().rss)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    kernel = await start(jupyter_server, client)
    code = (
        "k = get_ipython().kernel\n"
        "big = 'x' * (200 << 20)\n"
        "for _ in range(3):\n"
        "    k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': big},"
        " parent=k.get_parent('shell'))\n"
        "del big\n"
    )
    try:
        async with client.channels(kernel) as channels:
            # Each message is dropped, the channel stays: the run ends, saying what was dropped
            # (once per message that arrived while the channel was open), and the next is heard.
            out, finished = await run(channels, code)
            assert isinstance(finished, Finished)
            assert out.startswith("OutputTooLarge")
            assert set(out.split("OutputTooLarge")) == {""}
            out, _ = await run(channels, "print(6 * 7)")
            assert out == "42\n"
    finally:
        sampler.cancel()
        await client.shutdown_kernel(kernel)
    assert peak[0] - before < 150 * 1024 * 1024


async def test_the_memory_limit_holds_for_a_kernel_and_its_children_together(small):
    code = (
        "import os\n"
        "pids = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = bytearray(300 << 20)\n"
        "        for i in range(0, len(block), 4096):\n"
        "            block[i] = 1\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "codes = [os.waitpid(pid, 0)[1] for pid in pids]\n"
        "print('finished', sum(code == 0 for code in codes))\n"
    )
    async with JupyterClient(small.url, small.token) as client:
        kernel = await start(small, client)
        try:
            async with client.channels(kernel) as channels:
                out, _ = await run(channels, code, timeout=60)
        finally:
            await client.shutdown_kernel(kernel)
    # 900 MiB touched against 512 MiB: the group's OOM killer stops a child (or the kernel)
    assert out != "finished 3\n", out
