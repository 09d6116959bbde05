"""The same client against a real Jupyter Kernel Gateway (skipped when not installed). # no Django"""

from __future__ import annotations

import asyncio

from kernels.execution import Finished, KernelLost, Output
from kernels.jupyter import JupyterClient


async def test_it_runs_code_on_a_kernel_gateway(kernel_gateway: tuple[str, str]) -> None:
    await runs_a_kernel_start_to_end(*kernel_gateway)


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
