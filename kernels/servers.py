"""Which kernel server and kernelspec a notebook's kernel starts on.

Rules:
- The notebook's owner chooses (`NotebookKernel`): one of *their own* registered servers
  (`KernelServer`) or the deployment's default (`settings.JUPYTER_SERVER_URL` / `_TOKEN`), and a
  kernelspec ("" = that server's default).
- A choice pointing at a server the notebook's owner does not own (the notebook changed hands)
  is ignored: nobody's kernel runs on someone else's server with their token.
- Tokens are decrypted only here, in the worker, just before use; they are never returned to a
  browser (`Connection` is not JSON-serialisable on purpose: no `to_dict`).
- People register servers only on hosts `settings.KERNEL_SERVER_HOSTS` allows and only on public
  addresses (`host_refusal`, `kernels.netguard`: no loopback, private, link-local, metadata...
  unless `KERNEL_SERVER_ALLOW_HOSTS` names the host); a registered server whose host is no longer
  allowed is refused when a kernel would start, and every connection to it is checked again and
  pinned to the checked address (`client`).
- Synchronous (ORM, DNS): call through `database_sync_to_async` from the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from kernels import netguard
from kernels.jupyter import JupyterClient
from kernels.models import KernelServer, NotebookKernel
from notebooks.crypto import TokenUnreadable


@dataclass(frozen=True)
class Connection:
    url: str
    token: str = field(repr=False)
    kernelspec: str = ""
    server_id: int | None = None  # None: the deployment's default server
    refused: str = ""  # why no kernel may start there (see `host_refusal`)

    @property
    def registered(self) -> bool:
        """A server a person registered: every connection to it is checked and pinned."""
        return self.server_id is not None


def client(conn: Connection, *, timeout: float = 30.0) -> JupyterClient:
    """A client for `conn`; a registered server's connections go only to checked addresses."""
    return JupyterClient(
        conn.url,
        conn.token,
        timeout=timeout,
        pinned=conn.registered,
        max_reply_bytes=settings.KERNEL_SERVER_MAX_REPLY_BYTES,
    )


def host_refusal(url: str) -> str:
    """Why people may not run kernels on the server at `url` ("" if they may). Resolves its host."""
    try:
        url = netguard.clean_url(url)
    except netguard.Refused as exc:
        return str(exc)
    host = (urlsplit(url).hostname or "").lower()
    if not any(netguard.matches(host, pattern) for pattern in settings.KERNEL_SERVER_HOSTS):
        allowed = ", ".join(settings.KERNEL_SERVER_HOSTS) or "none"
        return f"This site does not run kernels on {host} (allowed hosts: {allowed})."
    return netguard.url_refusal(url)


def default_connection(kernelspec: str = "") -> Connection:
    return Connection(settings.JUPYTER_SERVER_URL, settings.JUPYTER_SERVER_TOKEN, kernelspec)


def connection_for(notebook_id: Any) -> Connection:
    """Where to start this notebook's kernel (see the module rules)."""
    choice = (
        NotebookKernel.objects.select_related("server", "notebook").filter(notebook_id=notebook_id).first()
    )
    if choice is None:
        return default_connection()
    server = choice.server
    if server is None or server.owner_id != choice.notebook.owner_id:
        return default_connection(choice.kernelspec if server is None else "")
    try:
        token = server.token()
    except TokenUnreadable:
        token = ""  # the server answers 403 and the cell shows why
    url = server.url.rstrip("/")
    return Connection(url, token, choice.kernelspec, server.pk, refused=host_refusal(url))


def server_connection(server: KernelServer | None) -> Connection:
    """The connection to a registered server (None: the default), for listing kernelspecs."""
    if server is None:
        return default_connection()
    try:
        token = server.token()
    except TokenUnreadable:
        token = ""
    url = server.url.rstrip("/")
    return Connection(url, token, "", server.pk, refused=host_refusal(url))
