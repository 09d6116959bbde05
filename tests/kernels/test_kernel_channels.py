"""`KernelChannels` against a scripted kernel websocket whose iopub is not subscribed yet for
the first moments of a connection, as a Jupyter Server's can be (it skips its own "nudge" when
it believes the kernel busy). A run sent then must still report busy and finish."""

from __future__ import annotations

import asyncio
import json
import uuid

from websockets.asyncio.server import serve

from kernels.execution import Finished, KernelStatus, Output
from kernels.jupyter import JupyterClient

DEAF_FOR = 0.5  # seconds after a connection during which iopub messages are lost


async def scripted_kernel(ws) -> None:
    loop = asyncio.get_running_loop()
    connected = loop.time()

    async def send(channel: str, msg_type: str, parent: dict, content: dict) -> None:
        if channel == "iopub" and loop.time() - connected < DEAF_FOR:
            return  # the server's iopub subscription is not connected yet: the message is lost
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type}
        msg = {"channel": channel, "header": header, "parent_header": parent, "content": content}
        await ws.send(json.dumps({**msg, "metadata": {}}))

    async for raw in ws:
        msg = json.loads(raw)
        if msg["channel"] != "shell":
            continue
        request = msg["header"]
        await send("iopub", "status", request, {"execution_state": "busy"})
        reply = request["msg_type"].replace("_request", "_reply")
        await send("shell", reply, request, {"status": "ok", "execution_count": 1})
        await send("iopub", "status", request, {"execution_state": "idle"})


async def test_a_run_sent_before_iopub_is_subscribed_reports_busy_and_finishes():
    async with serve(scripted_kernel, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with JupyterClient(f"http://127.0.0.1:{port}") as client:
            channels = client.channels("k1")
            await channels.open()
            msg_id = await channels.execute("1 + 1")  # at once, as the bridge does
            states = []

            async def until_finished():
                async for event in channels.events():
                    if isinstance(event, KernelStatus):
                        states.append(event.state)
                    if isinstance(event, Finished) and event.msg_id == msg_id:
                        return event

            finished = await asyncio.wait_for(until_finished(), 5)
            await channels.close()
    assert finished.status == "ok"
    assert "busy" in states


async def test_a_held_run_is_sent_on_the_next_connection_when_the_socket_drops_at_release():
    # The probe's answer arrives and the socket closes before the held run could be sent: the run
    # must wait for the next connection (same session id), not vanish.
    connections = []

    async def kernel_that_drops_the_first_connection(ws) -> None:
        connections.append(ws)
        async for raw in ws:
            msg = json.loads(raw)
            request = msg["header"]
            for channel, msg_type, content in (
                ("iopub", "status", {"execution_state": "busy"}),
                ("shell", request["msg_type"].replace("_request", "_reply"), {"status": "ok"}),
                ("iopub", "status", {"execution_state": "idle"}),
            ):
                header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type}
                reply = {"channel": channel, "header": header, "parent_header": request, "content": content}
                await ws.send(json.dumps({**reply, "metadata": {}}))
            if len(connections) == 1:  # answered the first probe, then the network fails
                await ws.close()
                return

    def kernel_model(connection, request):  # the REST call made before reconnecting
        if "upgrade" not in request.headers:
            response = connection.respond(200, json.dumps({"id": "k1", "name": "python3"}))
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    kernel = kernel_that_drops_the_first_connection
    async with serve(kernel, "127.0.0.1", 0, process_request=kernel_model) as server:
        port = server.sockets[0].getsockname()[1]
        async with JupyterClient(f"http://127.0.0.1:{port}") as client:
            channels = client.channels("k1")
            await channels.open()
            msg_id = await channels.execute("1 + 1")  # held until the probe's answer

            async def until_finished():
                async for event in channels.events():
                    if isinstance(event, Finished) and event.msg_id == msg_id:
                        return event

            finished = await asyncio.wait_for(until_finished(), 10)
            await channels.close()
    assert finished.status == "ok"
    assert len(connections) == 2


async def test_a_frame_over_the_limit_is_told_to_its_run_which_ends_though_its_reply_went_with_it(settings):
    # The kernel prints more than the bridge reads in a frame, then replies and goes idle: the
    # reply and the idle go with the connection the frame closed. The run gets an error output
    # saying what was not kept, and ends once the kernel answers a probe on the next connection.
    settings.KERNEL_MAX_FRAME_BYTES = 10_000
    connections = []

    async def kernel_printing_too_much(ws) -> None:
        connections.append(ws)
        async for raw in ws:
            request = json.loads(raw)["header"]
            replies = [("iopub", "status", {"execution_state": "busy"})]
            if request["msg_type"] == "execute_request":
                replies.append(("iopub", "stream", {"name": "stdout", "text": "x" * 20_000}))
            replies += [
                ("shell", request["msg_type"].replace("_request", "_reply"), {"status": "ok"}),
                ("iopub", "status", {"execution_state": "idle"}),
            ]
            for channel, msg_type, content in replies:
                header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type}
                reply = {"channel": channel, "header": header, "parent_header": request, "content": content}
                await ws.send(json.dumps({**reply, "metadata": {}}))

    def kernel_model(connection, request):  # the REST call made before reconnecting
        if "upgrade" not in request.headers:
            response = connection.respond(200, json.dumps({"id": "k1", "name": "python3"}))
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    async with serve(kernel_printing_too_much, "127.0.0.1", 0, process_request=kernel_model) as server:
        port = server.sockets[0].getsockname()[1]
        async with JupyterClient(f"http://127.0.0.1:{port}") as client:
            channels = client.channels("k1")
            await channels.open()
            msg_id = await channels.execute("print('x' * 20_000)")
            outputs = []

            async def until_finished():
                async for event in channels.events():
                    if isinstance(event, Output) and event.msg_id == msg_id:
                        outputs.append(event.msg["content"])
                    if isinstance(event, Finished) and event.msg_id == msg_id:
                        return event

            finished = await asyncio.wait_for(until_finished(), 10)
            await channels.close()
    assert len(connections) == 2
    assert finished.status == "lost"
    [error] = outputs
    assert error["ename"] == "OutputTooLarge"
    assert error["evalue"] == "Output of 20 KB exceeds the limit of 10 KB and was not kept."
