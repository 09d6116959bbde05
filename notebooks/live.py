"""Who has a notebook open right now, as far as this process can tell: the share page asks
`live_keys()`; the layer that holds the sockets (collab's rooms) registers the answer at start
(`provide()`), so notebooks never imports collab. Keys are `Principal.key` values."""

from __future__ import annotations

from collections.abc import Callable

_SOURCES: list[Callable[[str], set[str]]] = []


def provide(source: Callable[[str], set[str]]) -> None:
    """Register a function notebook id -> the keys of people with a live socket on it."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def live_keys(notebook_id) -> set[str]:
    keys: set[str] = set()
    for source in _SOURCES:
        keys |= source(str(notebook_id))
    return keys
