"""Fixtures for the kernel bridge tests. # no Django

`yjs`: decode pycrdt updates with the real Yjs (the repository's own `node_modules/yjs`), as a
browser would; a test using it fails when Node or yjs is missing, saying how to install them.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernels.local_server import LocalJupyterServer, free_port
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
const Y = require(process.argv[1]);
let input = '';
process.stdin.on('data', c => { input += c; });
process.stdin.on('end', () => {
  const doc = new Y.Doc();
  for (const b64 of JSON.parse(input)) Y.applyUpdate(doc, new Uint8Array(Buffer.from(b64, 'base64')));
  process.stdout.write(JSON.stringify(doc.getArray('cells').toJSON()));
});
"""


def decode_with_yjs(updates: list[bytes]) -> list[dict[str, Any]]:
    """Apply the updates in order to a fresh Yjs doc; return `cells` as JSON."""
    module = str(REPO / "node_modules" / "yjs")
    payload = json.dumps([base64.b64encode(u).decode() for u in updates])
    result = subprocess.run(
        ["node", "-e", _SCRIPT, module],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return list(json.loads(result.stdout))


@pytest.fixture
def yjs() -> Any:
    """`yjs(updates)` -> cells as a browser decodes them."""
    if not shutil.which("node"):
        pytest.fail("Node.js is missing for the Yjs cross-check: apt-get install nodejs npm", pytrace=False)
    if not (REPO / "node_modules" / "yjs" / "package.json").exists():
        pytest.fail(f"yjs is missing from {REPO / 'node_modules'}: run `npm ci` in {REPO}", pytrace=False)
    return decode_with_yjs


@pytest.fixture(scope="session")
def jupyter_server() -> Iterator[LocalJupyterServer]:
    """A real Jupyter Server + ipykernel on a free port for the whole run, stopped afterwards."""
    with LocalJupyterServer() as server:
        yield server


@pytest.fixture(scope="session")
def shared_kernel(jupyter_server: LocalJupyterServer) -> Iterator[str]:
    """One kernel for the tests that do not kill, restart or interrupt it."""
    headers = {"Authorization": f"token {jupyter_server.token}"}
    with httpx.Client(base_url=jupyter_server.url, headers=headers, timeout=30) as http:
        kernel_id = http.post("/api/kernels", json={"name": "python3"}).json()["id"]
        yield kernel_id
        http.delete(f"/api/kernels/{kernel_id}")


@pytest.fixture(scope="session")
def kernel_gateway() -> Iterator[tuple[str, str]]:
    """A real Jupyter Kernel Gateway (from requirements.lock)."""
    if importlib.util.find_spec("kernel_gateway") is None:
        pytest.fail(
            "jupyter-kernel-gateway is not installed: .venv/bin/pip install -r requirements.lock",
            pytrace=False,
        )
    token, port = secrets.token_hex(16), free_port()
    argv = [
        sys.executable,
        "-m",
        "kernel_gateway",
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={port}",
        "--KernelGatewayApp.port_retries=0",
        f"--KernelGatewayApp.auth_token={token}",
        "--JupyterApp.answer_yes=True",
    ]
    with _serving("Kernel Gateway", argv, port, token) as url:
        yield url, token


GATEWAY_VENV = REPO / ".venv-gateway"


@pytest.fixture(scope="session")
def enterprise_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real Jupyter Enterprise Gateway from `.venv-gateway` (its pins conflict with the app's;
    test.sh installs it from requirements-gateway.lock), launching kernels with its local process
    proxy from a kernelspec that runs this environment's ipykernel."""
    program = GATEWAY_VENV / "bin" / "jupyter-enterprisegateway"
    if not program.exists():
        pytest.fail(
            f"Enterprise Gateway is not installed in {GATEWAY_VENV}: run ./test.sh, which installs "
            "requirements-gateway.lock there",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("enterprise-gateway")
    spec = home / "share" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    token, port = secrets.token_hex(16), free_port()
    env = {
        **os.environ,
        "JUPYTER_PATH": str(home / "share"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "EG_AUTH_TOKEN": token,  # in the environment, not on a command line others can read
        # It refuses kernels for root by default (the app sends no KERNEL_USERNAME), and tests
        # may run as root.
        "EG_UNAUTHORIZED_USERS": "",
    }
    argv = [str(program), "--ip=127.0.0.1", f"--port={port}", "--port_retries=0"]
    with _serving("Enterprise Gateway", argv, port, token, env=env, cwd=home) as url:
        yield url, token
    # Each kernel's connection file goes when the kernel is shut down.
    assert not list((home / "runtime").glob("kernel-*.json")), "Enterprise Gateway left kernels running"


@contextlib.contextmanager
def _serving(name: str, argv: list[str], port: int, token: str, **popen: Any) -> Iterator[str]:
    """Run a kernel server until it answers on 127.0.0.1:`port`; its URL. Stopping it (SIGTERM)
    makes it shut down its kernels. `popen`: more arguments for `subprocess.Popen`."""
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} before answering")
            try:
                headers = {"Authorization": f"token {token}"}
                return httpx.get(f"{url}/api", headers=headers, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(answers, timeout=30, what=f"{name} to answer on {url}", every=0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class StubDns:
    """Stands in for `kernels.netguard.resolve`: names resolve only to what a test sets
    (`names`), every lookup is recorded (`calls`), and no query leaves the machine."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {"localhost": ["127.0.0.1"]}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.names:
            raise OSError(f"{host}: no such name in this test")
        return list(self.names[host])


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> StubDns:
    """Kernel tests never resolve names for real (see `StubDns`)."""
    from kernels import netguard

    stub = StubDns()
    monkeypatch.setattr(netguard, "resolve", stub)
    return stub
