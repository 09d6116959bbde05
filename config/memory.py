"""Handing freed memory back to the system."""

from __future__ import annotations

import ctypes
from contextlib import suppress


def give_back() -> None:
    """Return the memory this process freed to the system: glibc's malloc keeps freed pages (in
    the main arena and in those of the threads database work and compaction run in), so a worker
    would stay hundreds of MB larger after one big import or one big document was let go.
    Skipped where there is no glibc."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
