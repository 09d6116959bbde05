"""The cache (rate-limit counters) in Redis, shared by every worker; while Redis is unreachable,
this process's memory instead (limits then count per worker, as they do without Redis): an outage
never turns a login or a share link into an error."""

from __future__ import annotations

import contextlib
import logging

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)
METHODS = [
    "add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "decr",
    "set_many", "delete_many", "clear", "get_or_set",
]  # fmt: skip


class SharedCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._local = LocMemCache("redis-unreachable", {"TIMEOUT": params.get("TIMEOUT", 300)})


def _fail_open(name: str):
    shared = getattr(RedisCache, name)

    def method(self, *args, **kwargs):
        try:
            return shared(self, *args, **kwargs)
        except RedisError as e:
            logger.warning("cache: Redis unreachable (%s); counting in this worker", type(e).__name__)
            return getattr(self._local, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in METHODS:
    setattr(SharedCache, _name, _fail_open(_name))


def count_up(key: str, by: int = 1, seconds: int = 3600, cache=None) -> int:
    """Add `by` to the counter `key`, which starts at 0 and lasts `seconds`; a counter that
    expired between the two calls starts again rather than failing."""
    if cache is None:
        from django.core.cache import cache

    cache.add(key, 0, seconds)
    try:
        return cache.incr(key, by)
    except ValueError:
        cache.set(key, by, seconds)
        return by


def take(key: str, by: int, limit: int, seconds: int = 3600, cache=None) -> bool:
    """Count `by` against `limit` on the counter `key`: True if it fits. One atomic add, so
    requests at the same moment on any number of workers never pass `limit` together (a
    check and then an add would let them all see the old count); what does not fit is given
    back at once and counts for nothing."""
    if count_up(key, by, seconds, cache) <= limit:
        return True
    give_back(key, by, cache)
    return False


def give_back(key: str, by: int = 1, cache=None) -> None:
    """Undo `by` of a `take` (an attempt that turned out not to count)."""
    if cache is None:
        from django.core.cache import cache
    with contextlib.suppress(ValueError):  # expired meanwhile: nothing left to give back
        cache.decr(key, by)
