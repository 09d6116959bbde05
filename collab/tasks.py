"""Background tasks nobody awaits. Runs in the event loop.

asyncio keeps only a weak reference to a task: one started and forgotten may be collected
before it finishes, so `detach` keeps each until it is done, and logs how it failed.
"""

from __future__ import annotations

import asyncio
import logging

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
