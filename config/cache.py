"""The cache (rate-limit counters) in Redis, shared by every worker; while Redis is unreachable,
this process's memory instead (limits then count per worker, as they do without Redis): an outage
never turns a login or a share link into an error."""

from __future__ import annotations

import contextlib
import logging
import threading

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)
METHODS = [
    "add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "decr",
    "set_many", "delete_many", "clear", "get_or_set",
]  # fmt: skip


# A limit's counter in Redis is read and changed by one script each (a script runs alone): a
# counter never outlives its expiry, never goes below zero, and refused attempts count nothing.
# (Django's incr is two commands, EXISTS then INCRBY: a counter expiring between them would come
# back without an expiry, or at -1.)
TAKE = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[3]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1
"""
GIVE_BACK = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECRBY', KEYS[1], math.min(n, tonumber(ARGV[1]))) end
"""


# One Redis client (and its connection pool) per location and options for the whole process.
_CLIENTS: dict[tuple, RedisCacheClient] = {}
_CLIENTS_LOCK = threading.Lock()


class SharedCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._local = LocMemCache("redis-unreachable", {"TIMEOUT": params.get("TIMEOUT", 300)})

    @cached_property
    def _cache(self) -> RedisCacheClient:
        """Django makes a cache handle per request and per websocket (per asyncio context), and
        each of its own opened a connection pool: a worker held a Redis connection for every
        open socket and connected afresh for every request. The handles share one client."""
        key = (tuple(self._servers), repr(sorted(self._options.items())))
        with _CLIENTS_LOCK:
            if key not in _CLIENTS:
                _CLIENTS[key] = self._class(self._servers, **self._options)
            return _CLIENTS[key]

    def take(self, key: str, by: int, limit: int, seconds: int) -> bool:
        try:
            shared = self.make_and_validate_key(key)
            client = self._cache.get_client(shared, write=True)
            return bool(client.eval(TAKE, 1, shared, by, seconds, limit))
        except RedisError as e:
            logger.warning("cache: Redis unreachable (%s); counting in this worker", type(e).__name__)
            return _take(key, by, limit, seconds, self._local)

    def give_back(self, key: str, by: int) -> None:
        try:
            shared = self.make_and_validate_key(key)
            self._cache.get_client(shared, write=True).eval(GIVE_BACK, 1, shared, by)
        except RedisError as e:
            logger.warning("cache: Redis unreachable (%s); counting in this worker", type(e).__name__)
            _give_back(key, by, self._local)


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
    if cache is None:
        from django.core.cache import cache
    if isinstance(cache, SharedCache):
        return cache.take(key, by, limit, seconds)
    return _take(key, by, limit, seconds, cache)


def give_back(key: str, by: int = 1, cache=None) -> None:
    """Undo `by` of a `take` (an attempt that turned out not to count); never below zero."""
    if cache is None:
        from django.core.cache import cache
    if isinstance(cache, SharedCache):
        cache.give_back(key, by)
    else:
        _give_back(key, by, cache)


def _take(key: str, by: int, limit: int, seconds: int, cache) -> bool:
    if count_up(key, by, seconds, cache) <= limit:
        return True
    _give_back(key, by, cache)
    return False


def _give_back(key: str, by: int, cache) -> None:
    with contextlib.suppress(ValueError):  # expired meanwhile: nothing left to give back
        left = cache.decr(key, by)
        if left < 0:  # it expired and started again meanwhile: not below zero
            cache.incr(key, -left)
