"""Everything that changes a notebook outside the real-time engine. Each function writes its
audit event in the same transaction, and tells live rooms after the commit."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import PurePath
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit import log as audit
from config import memory
from config.cache import take
from notebooks import nbio, updatelog, ydoc
from notebooks.access import Access
from notebooks.events import notebook_changed
from notebooks.models import Notebook
from notebooks.refusals import Refused, Rule


def notify_after_commit(notebook_id, kind: str = "access") -> None:
    """Live sockets re-check their access (or reload) once this transaction commits. A sharing
    change also counts up the notebook's `access_version`, in the change's transaction: a room
    loading meanwhile has not subscribed to the notice yet, and reads the count instead."""
    if kind == "access":
        Notebook.objects.filter(pk=notebook_id).update(access_version=F("access_version") + 1)
    transaction.on_commit(lambda: notebook_changed.send(Notebook, notebook_id=notebook_id, kind=kind))


def title_from_filename(filename: str) -> str:
    stem = PurePath(filename).name
    if stem.lower().endswith(".ipynb"):
        stem = stem[: -len(".ipynb")]
    return stem.strip()[:200] or "Untitled"


def _create(owner, title: str, nb, request, action: str, **details) -> Notebook:
    return _create_from_state(owner, title, ydoc.notebook_to_update(nb), request, action, **details)


def _create_from_state(owner, title: str, state: bytes, request, action: str, **details) -> Notebook:
    with transaction.atomic():
        notebook = Notebook.objects.create(owner=owner, title=title, snapshot=state, last_edited_by=owner)
        audit.record(action, notebook=notebook, actor=owner, request=request, **details)
    return notebook


def create_blank(owner, request=None, title: str = "Untitled") -> Notebook:
    return _create(owner, title, nbio.blank_notebook(), request, "notebook.created")


def read_upload(source: bytes | BinaryIO):
    """An uploaded .ipynb (its bytes, or the uploaded file) within the configured size,
    cell-count and nesting limits."""
    limits = settings.NOTEBOOK_MAX_CELLS, settings.NOTEBOOK_MAX_JSON_DEPTH
    return nbio.read_ipynb(source, settings.NOTEBOOK_MAX_UPLOAD_BYTES, *limits)


def _document_of(source: bytes | BinaryIO) -> tuple[bytes, int]:
    """The document state of an uploaded .ipynb and its number of cells. The parsed notebook
    is gone when this returns: only the state is held while the database writes it."""
    nb = read_upload(source)
    return ydoc.notebook_to_update(nb), len(nb.cells)


class ImportsBusy(Exception):
    """This worker already runs `NOTEBOOK_MAX_CONCURRENT_IMPORTS` imports."""

    retry_after = 5  # seconds, for the Retry-After header

    def __init__(self):
        super().__init__("Another import is running on this server; try again in a moment.")


_imports_running = 0
_imports_lock = threading.Lock()


@contextmanager
def import_slot():
    """Hold one of the `NOTEBOOK_MAX_CONCURRENT_IMPORTS` places for imports (uploads and
    replacements) of this worker, or raise ImportsBusy at once. A 45 MB notebook takes seconds
    and about 300 MB to import, in a thread that shares the interpreter lock with the worker's
    event loop: three at once grew a worker by a GB and stalled its websockets for seconds."""
    global _imports_running
    with _imports_lock:
        if _imports_running >= settings.NOTEBOOK_MAX_CONCURRENT_IMPORTS:
            raise ImportsBusy
        _imports_running += 1
    try:
        yield
    finally:
        with _imports_lock:
            _imports_running -= 1
        _give_back_memory()


def _give_back_memory() -> None:
    """Return the memory an import freed to the system (notably in the arenas of the threads
    requests run in): a worker would stay hundreds of MB larger after one big import."""
    memory.give_back()


def take_import_budget(user, size: int) -> None:
    """Count an upload of `size` bytes against its person's `NOTEBOOK_IMPORT_BYTES_PER_HOUR`,
    or refuse it (before it is read) with Refused(RATE_LIMITED)."""
    limit = settings.NOTEBOOK_IMPORT_BYTES_PER_HOUR
    if not take(f"import-bytes:{user.pk}", size, limit):
        raise Refused(
            f"You can import at most {nbio.megabytes(limit)} of notebooks an hour; try again later.",
            Rule.RATE_LIMITED,
        )


def import_upload(owner, upload, request=None) -> Notebook:
    """Import an uploaded file (Django's UploadedFile): refused from its size before it is
    read, counted against its owner's hourly budget, read and parsed without keeping its bytes."""
    nbio.check_size(upload.size, settings.NOTEBOOK_MAX_UPLOAD_BYTES)
    take_import_budget(owner, upload.size)
    return import_ipynb(owner, upload.name, upload, request)


def import_ipynb(owner, filename: str, source: bytes | BinaryIO, request=None) -> Notebook:
    """Raises NotebookFileError (and creates nothing) if the file is not a usable notebook.
    `source` is the file's bytes or a file with a `size` (an upload)."""
    size = len(source) if isinstance(source, bytes) else source.size
    state, cells = _document_of(source)
    return _create_from_state(
        owner,
        title_from_filename(filename),
        state,
        request,
        "notebook.imported",
        filename=filename,
        bytes=size,
        cells=cells,
    )


def current_notebook(notebook_id):
    loaded = updatelog.load(notebook_id)
    return ydoc.read_notebook(ydoc.doc_from_updates(loaded.state))


def export_ipynb(access: Access, request=None) -> bytes:
    data = nbio.write_ipynb(current_notebook(access.notebook.pk))
    audit.record(
        "notebook.downloaded",
        notebook=access.notebook,
        actor=access.principal.user,
        link=access.link,
        label=access.actor_label,
        request=request,
    )
    return data


def rename(access: Access, title: str, request=None) -> None:
    notebook = access.notebook
    title = "".join(c if c.isprintable() else " " for c in title)  # no line breaks in a title
    old, notebook.title = notebook.title, title.strip()[:200] or "Untitled"
    with transaction.atomic():
        notebook.save(update_fields=["title"])
        audit.record(
            "notebook.renamed",
            notebook=notebook,
            actor=access.principal.user,
            link=access.link,
            label=access.actor_label,
            request=request,
            old=old,
            new=notebook.title,
        )


def duplicate(access: Access, owner, request=None) -> Notebook:
    """A copy costs what an import of it would: it takes an import place (ImportsBusy) and
    counts its document's size against its owner's hourly budget (Refused)."""
    with import_slot():
        state = ydoc.notebook_to_update(current_notebook(access.notebook.pk))
        take_import_budget(owner, len(state))
        return _create_from_state(
            owner,
            f"Copy of {access.notebook.title}"[:200],
            state,
            request,
            "notebook.created",
            copied_from=str(access.notebook.pk),
        )


def trash(access: Access, request=None) -> None:
    notebook = access.notebook
    with transaction.atomic():
        notebook.deleted_at = timezone.now()
        notebook.save(update_fields=["deleted_at"])
        audit.record("notebook.deleted", notebook=notebook, actor=access.principal.user, request=request)
        notify_after_commit(notebook.pk)


def restore(notebook: Notebook, user, request=None) -> None:
    with transaction.atomic():
        notebook.deleted_at = None
        notebook.save(update_fields=["deleted_at"])
        audit.record("notebook.restored", notebook=notebook, actor=user, request=request)


def purge(notebook: Notebook, user, request=None) -> None:
    with transaction.atomic():
        audit.record("notebook.purged", notebook=notebook, actor=user, request=request)
        notebook.delete()


def replace_with_upload(access: Access, upload, request=None) -> None:
    """`replace_content` with an uploaded file, refused and counted as `import_upload` does."""
    nbio.check_size(upload.size, settings.NOTEBOOK_MAX_UPLOAD_BYTES)
    take_import_budget(access.principal.user, upload.size)
    replace_content(access, upload.name, upload, request)


def replace_content(access: Access, filename: str, source: bytes | BinaryIO, request=None) -> None:
    """Replace the document with an uploaded file: a new epoch, so open editors reload
    instead of merging their old history into the new one."""
    state, cells = _document_of(source)
    with transaction.atomic():
        updatelog.replace(access.notebook.pk, state)
        audit.record(
            "notebook.replaced",
            notebook=access.notebook,
            actor=access.principal.user,
            request=request,
            filename=filename,
            cells=cells,
        )
        notify_after_commit(access.notebook.pk, "replaced")


def purge_expired_trash() -> int:
    cutoff = timezone.now() - timedelta(days=settings.NOTEBOOK_TRASH_DAYS)
    count, _ = Notebook.objects.filter(deleted_at__lt=cutoff).delete()
    return count
