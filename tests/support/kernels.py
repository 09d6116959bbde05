"""The kernel endpoints driven in-process (the ASGI app for runs, Django's client for the
settings page), what a cell's outputs hold, and one kernel's life on any kernel server."""

from __future__ import annotations

import asyncio
import json

from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.test import Client
from django.utils.crypto import get_random_string
from pycrdt import Array, Map, Text

from config.asgi import application
from kernels.execution import Finished, KernelLost, Output
from kernels.jupyter import JupyterClient, KernelChannels
from tests.support.cast import cookie_for


async def post(notebook_id, user, action: str, body: dict | None = None) -> tuple[int, dict]:
    cookie = await database_sync_to_async(cookie_for)(user)
    csrf = get_random_string(32)
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"origin", b"http://127.0.0.1:8000"),
        (b"cookie", f"{cookie}; csrftoken={csrf}".encode()),
        (b"x-csrftoken", csrf.encode()),
        (b"content-type", b"application/json"),
    ]
    path = f"/n/{notebook_id}/kernel/{action}"
    comm = HttpCommunicator(application, "POST", path, body=json.dumps(body or {}).encode(), headers=headers)
    response = await comm.get_response(timeout=10)
    try:
        data = json.loads(response["body"] or b"{}")
    except ValueError:
        data = {}
    return response["status"], data


def outputs(client, index: int = 0) -> list[dict]:
    return [o.to_py() if hasattr(o, "to_py") else o for o in client.cells[index]["outputs"]]


def settings_url(notebook) -> str:
    return f"/n/{notebook.pk}/kernel/settings"


def add_server(client: Client, notebook, url: str, token: str, name: str = "My box"):
    return client.post(
        settings_url(notebook), {"action": "add_server", "name": name, "url": url, "token": token}
    )


async def runs_a_kernel_start_to_end(url: str, token: str) -> None:
    """Through `JupyterClient`: kernelspecs, start, code with output and an error, interrupt,
    restart, shutdown. Shared by the tests of every kind of kernel server."""
    async with JupyterClient(url, token) as client:
        assert "python3" in (await client.kernelspecs())["kernelspecs"]
        kernel = await client.start_kernel()
        try:
            async with client.channels(kernel["id"]) as channels:
                msg_id = await channels.execute("print('gateway 😀')\n1/0")
                texts, finished = [], None
                async with asyncio.timeout(20):
                    async for event in channels.events():
                        if isinstance(event, Output) and event.msg["msg_type"] == "stream":
                            texts.append(event.msg["content"]["text"])
                        if isinstance(event, Finished | KernelLost):
                            finished = event
                            break
                assert texts == ["gateway 😀\n"]
                assert isinstance(finished, Finished)
                assert finished.msg_id == msg_id
                assert finished.status == "error"
            await client.interrupt_kernel(kernel["id"])
            assert (await client.restart_kernel(kernel["id"]))["id"] == kernel["id"]
        finally:
            await client.shutdown_kernel(kernel["id"])
        assert await client.get_kernel(kernel["id"]) is None


async def run_code(channels: KernelChannels, code: str, timeout: float = 30) -> tuple[str, object]:
    """Execute `code`; returns (stream text and error names, the final event: `Finished`, or
    `KernelLost` when the kernel died or restarted meanwhile)."""
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


def add_code_cell(client, cell_id: str, source: str) -> None:
    cell = Map(
        {
            "id": cell_id,
            "cell_type": "code",
            "source": Text(source),
            "metadata": Map(),
            "outputs": Array(),
            "execution_count": None,
        }
    )
    client.cells.append(cell)
