"""`collectstatic` only when the static sources changed since the last one.

It hashes every file, rewrites references and compresses each one (seconds of CPU for the
editor's bundles), and `manage.py serve` ran it at every start: most of a worker's start time.
The collected files carry a fingerprint of the sources they came from (each source file's
place, size and modification time, and the storage class); a start that finds the same
fingerprint skips the work. Deleting STATIC_ROOT (or the stamp in it) forces a collect.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles.finders import get_finders
from django.core.management import call_command

STAMP = ".sources.sha256"


def sources_fingerprint() -> str:
    """A digest of what `collectstatic` would collect, without reading the files."""
    ignore = apps.get_app_config("staticfiles").ignore_patterns
    rows = [settings.STORAGES["staticfiles"]["BACKEND"], settings.STATIC_URL]
    for finder in get_finders():
        for path, storage in finder.list(ignore):
            stat = os.stat(storage.path(path))
            rows.append(f"{storage.location}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def collect_if_changed() -> bool:
    """Run `collectstatic` unless STATIC_ROOT holds the current sources; True if it ran.
    Workers started together (a Procfile's) collect one at a time, on a lock of the folder
    itself: the later ones find the stamp written."""
    root = Path(settings.STATIC_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    folder = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        return _collect_unless_current(root / STAMP)
    finally:
        os.close(folder)


def _collect_unless_current(stamp: Path) -> bool:
    fingerprint = sources_fingerprint()
    try:
        if stamp.read_text() == fingerprint:
            return False
    except OSError:
        pass
    stamp.unlink(missing_ok=True)  # a collect that fails half-way is redone next time
    # From a clear folder: collectstatic skips a file whose copy is as new to the second, and a
    # source changed within the second of the last collect would stay stale behind a new stamp.
    call_command("collectstatic", interactive=False, verbosity=0, clear=True)
    stamp.write_text(fingerprint)
    return True
