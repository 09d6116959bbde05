"""The owner's kernel settings page: register kernel servers, pick the server and kernelspec.

Rules:
- The notebook's owner only (`Action.KERNEL_SERVERS`): co-owners, runners and editors get 403,
  since the servers listed and chosen here are the owner's own.
- A server's token is write-only: typed once into a password field, stored encrypted
  (`KernelServer.set_token`), never rendered back, never in a message or an audit event.
  The URL is shown to nobody but its owner, and only as the host name.
- Kernelspecs are listed live from the chosen server (`JupyterClient.kernelspecs()`); a server
  that fails gets one of `kernels.jupyter`'s fixed sentences (status code and step), never
  anything the server sent.
- A server's URL is checked and normalised before it is stored (`kernels.netguard`); name and
  token have length limits with a clear message.
- A choice takes effect the next time the kernel starts (say so; do not restart anyone's kernel).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from audit import log as audit
from kernels import netguard, servers
from kernels.jupyter import KernelServerError
from kernels.models import KernelServer, NotebookKernel
from kernels.servers import Connection, host_refusal, server_connection
from notebooks.access import Action, is_owners_server
from notebooks.views.common import get_access

MAX_NAME = 100  # KernelServer.name's column
MAX_TOKEN = 4096


class SettingsError(Exception):
    pass


def kernel_settings(request: HttpRequest, notebook_id) -> HttpResponse:
    access = get_access(request, notebook_id, Action.KERNEL_SERVERS)
    notebook = access.notebook
    if request.method == "POST":
        try:
            _act(request, notebook)
        except SettingsError as exc:
            messages.error(request, str(exc))
        return redirect("kernel_settings", notebook_id=notebook.pk)
    choice = NotebookKernel.objects.filter(notebook=notebook).select_related("server").first()
    server = choice.server if choice and is_owners_server(notebook, choice.server) else None
    specs, spec_error = list_kernelspecs(server)
    context = {
        "notebook": notebook,
        "servers": [
            {"id": s.pk, "name": s.name, "host": urlsplit(s.url).hostname or ""}
            for s in KernelServer.objects.filter(owner=notebook.owner)
        ],
        "chosen_server": server.pk if server else None,
        "chosen_spec": choice.kernelspec if choice else "",
        "specs": specs,
        "spec_error": spec_error,
    }
    return render(request, "kernels/settings.html", context)


def list_kernelspecs(server: KernelServer | None) -> tuple[list[dict[str, str]], str]:
    """[(name, display name)] of the server's kernelspecs (default first), or an error message."""
    conn = server_connection(server)
    if not conn.url:
        return [], "No default kernel server is configured."
    if conn.refused:
        return [], conn.refused
    try:
        data = async_to_sync(_kernelspecs)(conn)
    except KernelServerError as exc:
        return [], f"Its kernels cannot be listed. {exc}"
    default = data.get("default", "")
    kernelspecs = data.get("kernelspecs")
    if not isinstance(kernelspecs, dict):
        return [], "Its kernels cannot be listed. The kernel server sent a reply of the wrong shape."
    specs = [
        {"name": str(name)[:200], "display_name": _display_name(name, spec)}
        for name, spec in sorted(kernelspecs.items())
    ]
    specs.sort(key=lambda s: s["name"] != default)
    return specs, ""


def _display_name(name: str, spec: Any) -> str:
    inner = spec.get("spec") if isinstance(spec, dict) else None
    shown = inner.get("display_name") if isinstance(inner, dict) else None
    return str(shown or name)[:200]


async def _kernelspecs(conn: Connection) -> dict[str, Any]:
    async with servers.client(conn, timeout=settings.KERNEL_SPEC_TIMEOUT) as client:
        return await client.kernelspecs()


def _act(request: HttpRequest, notebook) -> None:
    post = request.POST
    action = post.get("action")
    owner = notebook.owner
    if action == "add_server":
        name, url, token = post.get("name", "").strip(), post.get("url", "").strip(), post.get("token", "")
        if not name or not url:
            raise SettingsError("Give the server a name and an http:// or https:// address.")
        if len(name) > MAX_NAME or len(token) > MAX_TOKEN:
            raise SettingsError(f"A name may have up to {MAX_NAME} characters, a token up to {MAX_TOKEN}.")
        try:
            url = netguard.clean_url(url)
        except netguard.Refused as exc:
            raise SettingsError(str(exc)) from None
        if refusal := host_refusal(url):
            raise SettingsError(refusal)
        server = KernelServer(owner=owner, name=name, url=url)
        server.set_token(token.strip())
        try:
            server.save()
        except IntegrityError:
            raise SettingsError(f"You already have a server called “{name}”.") from None
        _record(request, notebook, "kernel.server_added", server=server.name)
        messages.success(request, f"Added “{server.name}”. Choose it below to run this notebook there.")
    elif action == "delete_server":
        server = _own_server(owner, post.get("server_id"))
        if server is None:
            raise SettingsError("No such server.")
        server.delete()
        _record(request, notebook, "kernel.server_removed", server=server.name)
        messages.success(request, f"Removed “{server.name}”.")
    elif action == "choose":
        _choose(request, notebook, post.get("server_id", ""), post.get("kernelspec", ""))
    else:
        raise SettingsError("Unknown action.")


def _choose(request: HttpRequest, notebook, server_id: str, kernelspec: str) -> None:
    server = None
    if server_id:
        server = _own_server(notebook.owner, server_id)
        if server is None:
            raise SettingsError("Choose one of your own servers.")
    choice, _ = NotebookKernel.objects.get_or_create(notebook=notebook)
    if (server.pk if server else None) != choice.server_id:
        kernelspec = ""  # the old server's kernelspecs mean nothing on the new one
    elif kernelspec:
        specs, error = list_kernelspecs(server)
        if error or kernelspec not in {s["name"] for s in specs}:
            raise SettingsError(error or "That kernel is not available on this server.")
    choice.server, choice.kernelspec = server, kernelspec
    choice.save()
    _record(
        request,
        notebook,
        "kernel.settings_changed",
        server=server.name if server else "",
        kernelspec=kernelspec,
    )
    messages.success(request, "Saved. It applies the next time the kernel starts (restart it to switch now).")


def _own_server(owner, server_id: Any) -> KernelServer | None:
    try:
        return KernelServer.objects.filter(owner=owner, pk=int(server_id)).first()
    except (TypeError, ValueError):
        return None


def _record(request: HttpRequest, notebook, action: str, **details: Any) -> None:
    audit.record(action, notebook=notebook, actor=request.user, request=request, **details)
