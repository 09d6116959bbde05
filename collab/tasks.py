"""Background tasks nobody awaits, and the edit path's database thread. Runs in the event loop.

asyncio keeps only a weak reference to a task: one started and forgotten may be collected
before it finishes, so `detach` keeps each until it is done, and logs how it failed.

`database_sync_to_async` runs every call on one thread the whole worker shares, where a
thousand people joining a lecture queue their access checks and audit rows. The edit path's
database work (saving updates, claiming client ids, catching up from the update log) runs on
a thread and connection of its own (`on_edit_thread`): the lecturer's edits, saved before
anyone else sees them, never wait behind that bookkeeping. One thread, so a room's writes
stay in order and a worker holds one more connection, not one per room.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async

log = logging.getLogger(__name__)

_background: set[asyncio.Task] = set()


def detach(coro) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_done)


def _done(task: asyncio.Task) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_coro(), exc_info=task.exception())


_EDITS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collab-edits")


def on_edit_thread(func):
    """`database_sync_to_async(func)` on the edit path's own thread."""
    return database_sync_to_async(func, thread_sensitive=False, executor=_EDITS)
