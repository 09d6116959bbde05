"""The one way tests wait: poll a predicate until it holds, and fail naming what was awaited.

`eventually` for plain code (processes, browsers, HTTP), `eventually_async` inside a test's
event loop (its predicate may be a coroutine function, e.g. one asking the database in a thread).
Both return the predicate's first truthy value, so a wait can also fetch what it waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


def eventually(predicate: Callable[[], Any], *, what: str, timeout: float = 15.0, every: float = 0.05) -> Any:
    """Call `predicate` every `every` s until it returns something truthy; return that. After
    `timeout` s fail with "gave up waiting for <what>" and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_gave_up(what, timeout, value))
        time.sleep(every)


async def eventually_async(
    predicate: Callable[[], Any], *, what: str, timeout: float = 15.0, every: float = 0.05
) -> Any:
    """`eventually` without blocking the event loop; `predicate` may return an awaitable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(_gave_up(what, timeout, value))
        await asyncio.sleep(every)


def _gave_up(what: str, timeout: float, value: Any) -> str:
    last = repr(value)
    return f"gave up waiting for {what} after {timeout} s (last: {last[:200]})"
