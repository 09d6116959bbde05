"""An asyncio client for a Jupyter Server or Jupyter Kernel Gateway (REST here; the kernel
websocket in `kernels.kernelws`, re-exported).

Rules:
- Runs in the event loop; never blocks. REST through `httpx.AsyncClient`, channels through a
  `websockets` client speaking the legacy JSON protocol (no subprotocol), which both Jupyter
  Server and Kernel Gateway accept.
- The token travels in an `Authorization: token ...` header, never in a URL that could be logged.
  Nothing here may reach a browser: URL, token and kernel id stay server side.
- A `KernelChannels` keeps one session id for its whole life. Reconnecting with the same id
  makes the server replay what it buffered while no socket was open (a new id gets nothing),
  so callers must store `session_id` if they want to resume after a process restart.
- After a restart, and on every new connection, shell requests are held until iopub reaches
  this socket (`_hold_until_iopub`): a request sent earlier may lose its busy/idle statuses.
- Outputs are capped when written into the document (`kernels.outputs`); a frame over
  `KERNEL_MAX_FRAME_BYTES` (far above any output worth keeping) is not read: the connection closes
  and reopens with the same session id, the running cell gets an error output saying what was not
  kept, and executions whose reply or `idle` went with the closed socket end once the kernel
  answers a probe sent on the new connection. So one huge message can neither grow the worker by
  its size nor stall the kernel. REST replies are read up to `max_reply_bytes` and must be JSON of
  the expected shape.
- Errors are a fixed set of sentences (`KernelServerError`): the status code and the step that
  failed, never the server's reply, never a transport error's text (which would tell an open
  port from a closed one, or echo an address); they may be shown to the people who may run.
- `pinned=True` (servers people register): every connection goes to an address
  `kernels.netguard` has just checked, with the URL's Host header and TLS server name.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from kernels import netguard
from kernels.errors import KernelGone, KernelServerError
from kernels.kernelws import PROTOCOL_VERSION, KernelChannels, decode_frame  # noqa: F401

MAX_REPLY_BYTES = 1 << 20  # a REST reply larger than this is an error

# (method, path; for one kernel its last part after the id) -> (the step in error messages, the
# JSON type its reply must have; None: no reply expected)
_STEPS: dict[tuple[str, str], tuple[str, type | None]] = {
    ("GET", "/api"): ("checking the server", dict),
    ("GET", "/api/kernelspecs"): ("listing kernelspecs", dict),
    ("GET", "/api/kernels"): ("listing kernels", list),
    ("POST", "/api/kernels"): ("starting a kernel", dict),
    ("GET", "kernel"): ("looking up the kernel", dict),
    ("POST", "interrupt"): ("interrupting the kernel", None),
    ("POST", "restart"): ("restarting the kernel", dict),
    ("DELETE", "kernel"): ("shutting down the kernel", None),
}


class JupyterClient:
    """REST calls to one Jupyter Server / Kernel Gateway. Use as `async with JupyterClient(...)`."""

    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        timeout: float = 30.0,
        pinned: bool = False,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.headers = {"Authorization": f"token {token}"} if token else {}
        self.pinned = pinned
        self.max_reply_bytes = max_reply_bytes
        transport = netguard.pinned_transport(self.base_url) if pinned else None
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> JupyterClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        step, expected = _step(method, path)
        try:
            async with self._http.stream(method, path, **kwargs) as response:
                status = response.status_code
                if status == 404 and path.startswith("/api/kernels/"):
                    raise KernelGone("The kernel is gone from its server.")
                if not 200 <= status < 300:
                    raise KernelServerError(f"The kernel server answered {status} when {step}.")
                body = await self._read(response, step)
        except netguard.Refused as exc:
            raise KernelServerError(str(exc)) from None
        except httpx.HTTPError:
            raise KernelServerError(f"The kernel server could not be reached when {step}.") from None
        return _parse(body, step, expected)

    async def _read(self, response: httpx.Response, step: str) -> bytes:
        """The body, or an error once it grows past `max_reply_bytes` (read no further)."""
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_reply_bytes:
                limit = f"{self.max_reply_bytes:,} bytes"
                raise KernelServerError(f"The kernel server sent a reply larger than {limit} when {step}.")
            chunks.append(chunk)
        return b"".join(chunks)

    async def status(self) -> dict[str, Any]:
        return dict(await self._request("GET", "/api"))

    async def kernelspecs(self) -> dict[str, Any]:
        """`{"default": name, "kernelspecs": {name: {...}}}`."""
        return dict(await self._request("GET", "/api/kernelspecs"))

    async def list_kernels(self) -> list[dict[str, Any]]:
        return list(await self._request("GET", "/api/kernels"))

    async def start_kernel(self, name: str | None = None, path: str = "") -> dict[str, Any]:
        """Start a kernel (the server's default spec when `name` is None); returns its model.

        `path`: the notebook's id; the local server gives each one a home directory of its own
        (other servers treat it as a working directory, falling back to their root)."""
        body: dict[str, str] = {"name": name} if name else {}
        if path:
            body["path"] = path
        return dict(await self._request("POST", "/api/kernels", json=body))

    async def get_kernel(self, kernel_id: str) -> dict[str, Any] | None:
        """The kernel's model, or None if the server does not know it."""
        try:
            return dict(await self._request("GET", f"/api/kernels/{quote(kernel_id, safe='')}"))
        except KernelGone:
            return None

    async def interrupt_kernel(self, kernel_id: str) -> None:
        await self._request("POST", f"/api/kernels/{quote(kernel_id, safe='')}/interrupt")

    async def restart_kernel(self, kernel_id: str) -> dict[str, Any]:
        return dict(await self._request("POST", f"/api/kernels/{quote(kernel_id, safe='')}/restart"))

    async def shutdown_kernel(self, kernel_id: str) -> None:
        with contextlib.suppress(KernelGone):
            await self._request("DELETE", f"/api/kernels/{quote(kernel_id, safe='')}")

    def channels_url(self, kernel_id: str, session_id: str) -> str:
        ws_base = "ws" + self.base_url.removeprefix("http")
        return f"{ws_base}/api/kernels/{quote(kernel_id, safe='')}/channels?session_id={quote(session_id)}"

    def channels(self, kernel_id: str, session_id: str | None = None) -> KernelChannels:
        """A (not yet open) channel connection; pass a stored `session_id` to resume."""
        return KernelChannels(self, kernel_id, session_id or uuid.uuid4().hex)


def _step(method: str, path: str) -> tuple[str, type | None]:
    where = path
    if path.startswith("/api/kernels/"):
        rest = path.removeprefix("/api/kernels/").split("/")
        where = rest[1] if len(rest) > 1 else "kernel"
    return _STEPS.get((method, where), ("talking to the kernel server", None))


def _parse(body: bytes, step: str, expected: type | None) -> Any:
    """The reply's JSON (None when empty), of the `expected` type."""
    if not body.strip():
        if expected is None:
            return None
        raise KernelServerError(f"The kernel server sent an empty reply when {step}.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise KernelServerError(f"The kernel server sent a reply that is not JSON when {step}.") from None
    if expected is not None and not isinstance(data, expected):
        raise KernelServerError(f"The kernel server sent a reply of the wrong shape when {step}.")
    return data
