from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.models import PALETTE
from notebooks import access as acl
from notebooks import actions
from notebooks.nbio import NotebookFileError
from notebooks.views.common import busy, get_access, principal

EDITOR_PRELOAD = Path(settings.BASE_DIR) / "static" / "dist" / "editor.preload.json"


def editor_preloads() -> list[str]:
    """The static paths of the chunks editor.js imports, for <link rel="modulepreload"> (the
    build lists them in dist/editor.preload.json); none if the file is missing or unreadable."""
    try:
        mtime = EDITOR_PRELOAD.stat().st_mtime_ns
    except OSError:
        return []
    return _read_preloads(mtime)


@lru_cache(maxsize=1)
def _read_preloads(_mtime: int) -> list[str]:
    try:
        names = json.loads(EDITOR_PRELOAD.read_text())
    except (OSError, ValueError):
        return []
    return [f"dist/{name}" for name in names if isinstance(name, str)]


def editor(request, notebook_id):
    access = get_access(request, notebook_id)
    notebook = access.notebook
    config = {
        "notebookId": str(notebook.pk),
        "title": notebook.title,
        "wsPath": "/ws/notebooks",
        "epoch": str(notebook.epoch),
        "me": access.identity,
        "palette": PALETTE,
        "canEdit": access.can(acl.Action.EDIT),
        "canRun": access.can(acl.Action.RUN),
        "isOwner": access.can(acl.Action.OWN),
        "canShare": access.can(acl.Action.SHARE),
        "saveAckTimeoutMs": round(settings.EDITOR_SAVE_ACK_TIMEOUT * 1000),
        "urls": {
            "download": f"/n/{notebook.pk}/download",
            "list": "/notebooks/",
            "run": f"/n/{notebook.pk}/kernel/run",
            "kernel": f"/n/{notebook.pk}/kernel/",
            "share": f"/n/{notebook.pk}/share",
            "requestAccess": f"/n/{notebook.pk}/request-access",
        },
    }
    return render(
        request,
        "notebooks/editor.html",
        {"notebook": notebook, "access": access, "editor_config": config, "preload": editor_preloads()},
    )


def download(request, notebook_id):
    access = get_access(request, notebook_id)
    data = actions.export_ipynb(access, request)
    response = HttpResponse(data, content_type="application/x-ipynb+json")
    response["Content-Disposition"] = attachment(access.notebook.title + ".ipynb")
    return response


def attachment(filename: str) -> str:
    """A Content-Disposition header for any title: control characters (a CR/LF would make the
    header invalid) become spaces; an ASCII `filename` fallback next to `filename*` in UTF-8."""
    name = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in filename).strip() or "notebook"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = ascii_name.replace("\\", "_").replace('"', "'").strip()
    if ascii_name.removesuffix(".ipynb").strip() == "":
        ascii_name = "notebook.ipynb"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@require_POST
def rename(request, notebook_id):
    access = get_access(request, notebook_id, acl.Action.EDIT)
    actions.rename(access, request.POST.get("title", ""), request)
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    return redirect(target if target and safe else "my_notebooks")


@login_required
@require_POST
def duplicate(request, notebook_id):
    access = get_access(request, notebook_id)
    try:
        copy = actions.duplicate(access, request.user, request)
    except actions.ImportsBusy as e:
        return busy(request, e)
    except acl.Refused as e:
        messages.error(request, f"The notebook was not copied: {e}")
        return redirect(access.notebook)
    messages.success(request, f"Made “{copy.title}”.")
    return redirect("my_notebooks")


@login_required
def delete(request, notebook_id):
    access = get_access(request, notebook_id, acl.Action.OWN)
    if request.method == "POST":
        actions.trash(access, request)
        messages.success(request, f"“{access.notebook.title}” moved to the trash.")
        return redirect("my_notebooks")
    return render(request, "notebooks/confirm_delete.html", {"notebook": access.notebook})


@login_required
@require_POST
def restore(request, notebook_id):
    try:
        notebook = acl.access_trashed(principal(request), notebook_id)
    except acl.NoAccess as e:
        messages.error(request, e.reason)
    else:
        actions.restore(notebook, request.user, request)
        messages.success(request, f"“{notebook.title}” is restored.")
    return redirect("trash")


@login_required
@require_POST
def purge(request, notebook_id):
    try:
        notebook = acl.access_trashed(principal(request), notebook_id)
    except acl.NoAccess as e:
        messages.error(request, e.reason)
    else:
        actions.purge(notebook, request.user, request)
        messages.success(request, f"“{notebook.title}” is deleted for good.")
    return redirect("trash")


@login_required
@require_POST
def replace(request, notebook_id):
    access = get_access(request, notebook_id, acl.Action.OWN)
    try:
        with actions.import_slot():
            upload = request.FILES.get("file")
            if upload is None:
                raise NotebookFileError("Choose an .ipynb file.")
            actions.replace_with_upload(access, upload, request)
    except actions.ImportsBusy as e:
        return busy(request, e)
    except (NotebookFileError, acl.Refused) as e:
        messages.error(request, f"The notebook was not replaced: {e}")
    else:
        messages.success(request, "The notebook was replaced; everyone with it open reloads.")
    return redirect(access.notebook)
