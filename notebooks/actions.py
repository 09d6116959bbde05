"""Everything that changes a notebook outside the real-time engine. Each function writes its
audit event in the same transaction, and tells live rooms after the commit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import PurePath

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import log as audit
from notebooks import nbio, updatelog, ydoc
from notebooks.access import Access
from notebooks.events import notebook_changed
from notebooks.models import Notebook


def notify_after_commit(notebook_id, kind: str = "access") -> None:
    """Live sockets re-check their access (or reload) once this transaction commits."""
    transaction.on_commit(lambda: notebook_changed.send(Notebook, notebook_id=notebook_id, kind=kind))


def title_from_filename(filename: str) -> str:
    stem = PurePath(filename).name
    if stem.lower().endswith(".ipynb"):
        stem = stem[: -len(".ipynb")]
    return stem.strip()[:200] or "Untitled"


def _create(owner, title: str, nb, request, action: str, **details) -> Notebook:
    state = ydoc.notebook_to_update(nb)
    with transaction.atomic():
        notebook = Notebook.objects.create(owner=owner, title=title, snapshot=state, last_edited_by=owner)
        audit.record(action, notebook=notebook, actor=owner, request=request, **details)
    return notebook


def create_blank(owner, request=None, title: str = "Untitled") -> Notebook:
    return _create(owner, title, nbio.blank_notebook(), request, "notebook.created")


def read_upload(data: bytes):
    """An uploaded .ipynb within the configured size, cell-count and nesting limits."""
    limits = settings.NOTEBOOK_MAX_CELLS, settings.NOTEBOOK_MAX_JSON_DEPTH
    return nbio.read_ipynb(data, settings.NOTEBOOK_MAX_UPLOAD_BYTES, *limits)


def upload_bytes(upload) -> bytes:
    """An uploaded file's bytes, refused from its size before it is read into memory."""
    nbio.check_size(upload.size, settings.NOTEBOOK_MAX_UPLOAD_BYTES)
    return upload.read()


def import_ipynb(owner, filename: str, data: bytes, request=None) -> Notebook:
    """Raises NotebookFileError (and creates nothing) if the file is not a usable notebook."""
    nb = read_upload(data)
    return _create(
        owner,
        title_from_filename(filename),
        nb,
        request,
        "notebook.imported",
        filename=filename,
        bytes=len(data),
        cells=len(nb.cells),
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
    nb = current_notebook(access.notebook.pk)
    return _create(
        owner,
        f"Copy of {access.notebook.title}"[:200],
        nb,
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


def replace_content(access: Access, filename: str, data: bytes, request=None) -> None:
    """Replace the document with an uploaded file: a new epoch, so open editors reload
    instead of merging their old history into the new one."""
    nb = read_upload(data)
    state = ydoc.notebook_to_update(nb)
    with transaction.atomic():
        updatelog.replace(access.notebook.pk, state)
        audit.record(
            "notebook.replaced",
            notebook=access.notebook,
            actor=access.principal.user,
            request=request,
            filename=filename,
            cells=len(nb.cells),
        )
        notify_after_commit(access.notebook.pk, "replaced")


def purge_expired_trash() -> int:
    cutoff = timezone.now() - timedelta(days=settings.NOTEBOOK_TRASH_DAYS)
    count, _ = Notebook.objects.filter(deleted_at__lt=cutoff).delete()
    return count
