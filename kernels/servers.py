"""Which kernel server and kernelspec a notebook's kernel starts on.

Rules:
- The notebook's owner chooses (`NotebookKernel`): one of *their own* registered servers
  (`KernelServer`) or the deployment's default (`settings.JUPYTER_SERVER_URL` / `_TOKEN`), and a
  kernelspec ("" = that server's default).
- A choice pointing at a server the notebook's owner does not own (the notebook changed hands)
  is ignored: nobody's kernel runs on someone else's server with their token.
- Tokens are decrypted only here, in the worker, just before use; they are never returned to a
  browser (`Connection` is not JSON-serialisable on purpose: no `to_dict`).
- Synchronous (ORM): call through `database_sync_to_async` from the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from kernels.crypto import TokenUnreadable
from kernels.models import KernelServer, NotebookKernel


@dataclass(frozen=True)
class Connection:
    url: str
    token: str = field(repr=False)
    kernelspec: str = ""
    server_id: int | None = None  # None: the deployment's default server


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
    return Connection(server.url.rstrip("/"), token, choice.kernelspec, server.pk)


def server_connection(server: KernelServer | None) -> Connection:
    """The connection to a registered server (None: the default), for listing kernelspecs."""
    if server is None:
        return default_connection()
    try:
        token = server.token()
    except TokenUnreadable:
        token = ""
    return Connection(server.url.rstrip("/"), token, "", server.pk)
