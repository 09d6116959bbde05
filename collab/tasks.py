"""Background tasks nobody awaits. Runs in the event loop.

asyncio keeps only a weak reference to a task: one started and forgotten may be collected
before it finishes, so `detach` keeps each until it is done.
"""

from __future__ import annotations

import asyncio

_background: set[asyncio.Task] = set()


def detach(coro) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
