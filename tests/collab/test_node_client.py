"""The unmodified npm yjs + y-websocket client and a pycrdt client edit one notebook together."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import ROOT, Stack
from tests.support.waiting import eventually_async
from tests.support.yclient import open_client

pytestmark = pytest.mark.processes

NODE_MODULES = ROOT / "node_modules"


@pytest.fixture(scope="module")
def stack():
    if not (NODE_MODULES / "y-websocket").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True)
    stack = Stack(redis=False)
    yield stack
    stack.close()


async def test_npm_websocket_provider_and_pycrdt_client_converge(stack):
    assert shutil.which("node")
    alice = stack.user_with_notebook("alice@example.com")
    port = stack.start_worker()
    py = await open_client(port, alice["notebook_id"], alice["cookie"])
    edits = 40
    markers = [f"js{i};" for i in range(edits)] + [f"py{i};" for i in range(edits)]
    node = await asyncio.create_subprocess_exec(
        "node",
        str(Path(__file__).parents[1] / "node" / "client.mjs"),
        f"ws://127.0.0.1:{port}/ws/notebooks",
        alice["notebook_id"],
        alice["cookie"],
        f"http://127.0.0.1:{port}",
        "js",
        str(edits),
        env={"EXPECT": ",".join(markers), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    for i in range(edits):
        py.text().insert(len(py.text()), f"py{i};")
        await py.flush()
        await asyncio.sleep(0.003)
    out, err = await asyncio.wait_for(node.communicate(), 40)
    assert node.returncode == 0, err.decode()
    seen_by_node = json.loads(out)["source"]
    await eventually_async(
        lambda: py.source() == seen_by_node, what="the Python client to hold what node saw"
    )
    assert all(m in seen_by_node for m in markers)
    assert stack.stored_source(alice["notebook_id"]) == seen_by_node
    await py.ws.close()
