"""The cache (rate-limit counters) in Redis, shared by every worker; while Redis is unreachable,
this process's memory instead (limits then count per worker, as they do without Redis): an outage
never turns a login or a share link into an error.

An unreachable Redis is not asked again for `RETRY_AFTER` seconds: a stopped Redis (one that
accepts connections and never answers) held every rate-limited request, logins and share links
included, for its socket timeout, twice. One line is logged when it becomes unreachable and one
when it answers again."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property
from redis.exceptions import RedisError

from config.failures import FailureLog

logger = logging.getLogger(__name__)
RETRY_AFTER = 5.0  # seconds an unreachable Redis is left alone
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


class _Reachability:
    """Whether a Redis location is worth asking, for the whole process."""

    def __init__(self):
        self.failures = FailureLog(logger, "cache: Redis")
        self.retry_at = 0.0

    def worth_asking(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self, exc: BaseException) -> None:
        self.retry_at = time.monotonic() + RETRY_AFTER
        self.failures.failed(exc, f"counting in this worker, asking again every {RETRY_AFTER:g} s")

    def answered(self) -> None:
        self.retry_at = 0.0
        self.failures.worked()


_REACHABILITY: dict[tuple, _Reachability] = {}


class SharedCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._local = LocMemCache("redis-unreachable", {"TIMEOUT": params.get("TIMEOUT", 300)})

    @cached_property
    def _client_key(self) -> tuple:
        return (tuple(self._servers), repr(sorted(self._options.items())))

    @cached_property
    def _redis(self) -> _Reachability:
        with _CLIENTS_LOCK:
            return _REACHABILITY.setdefault(self._client_key, _Reachability())

    def _shared_or_local(self, shared, local):
        """`shared()` in Redis, or `local()` in this worker while Redis is unreachable."""
        if not self._redis.worth_asking():
            return local()
        try:
            result = shared()
        except RedisError as e:
            self._redis.failed(e)
            return local()
        self._redis.answered()
        return result

    @cached_property
    def _cache(self) -> RedisCacheClient:
        """Django makes a cache handle per request and per websocket (per asyncio context), and
        each of its own opened a connection pool: a worker held a Redis connection for every
        open socket and connected afresh for every request. The handles share one client."""
        key = self._client_key
        with _CLIENTS_LOCK:
            if key not in _CLIENTS:
                _CLIENTS[key] = self._class(self._servers, **self._options)
            return _CLIENTS[key]

    def take(self, key: str, by: int, limit: int, seconds: int) -> bool:
        def shared() -> bool:
            name = self.make_and_validate_key(key)
            client = self._cache.get_client(name, write=True)
            return bool(client.eval(TAKE, 1, name, by, seconds, limit))

        return self._shared_or_local(shared, lambda: _take(key, by, limit, seconds, self._local))

    def give_back(self, key: str, by: int) -> None:
        def shared() -> None:
            name = self.make_and_validate_key(key)
            self._cache.get_client(name, write=True).eval(GIVE_BACK, 1, name, by)

        self._shared_or_local(shared, lambda: _give_back(key, by, self._local))


def _fail_open(name: str):
    shared = getattr(RedisCache, name)

    def method(self, *args, **kwargs):
        return self._shared_or_local(
            lambda: shared(self, *args, **kwargs), lambda: getattr(self._local, name)(*args, **kwargs)
        )

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
