"""Handing freed memory back to the system."""

from __future__ import annotations

import ctypes
import gc
from contextlib import suppress


def give_back() -> None:
    """Return the memory this process freed to the system: glibc's malloc keeps freed pages (in
    the main arena and in those of the threads database work and compaction run in), so a worker
    would stay hundreds of MB larger after one big import or one big document was let go.
    Skipped where there is no glibc."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def settle() -> None:
    """Once the worker has imported everything (Django, Twisted, every view: about 300,000
    objects the collector tracks): set them aside from the garbage collector (`gc.freeze`), so
    that a full collection walks only what came later (rooms, sockets) instead of all of them
    again, which took 300-450 ms of the event loop with 1,000 rooms open."""
    gc.collect()
    gc.freeze()
