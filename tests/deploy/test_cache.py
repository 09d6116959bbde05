"""The shared cache: counters in a real Redis; while Redis is unreachable, in the worker."""

from __future__ import annotations

import subprocess

import pytest

from config.cache import SharedCache
from tests.support.processes import free_port, wait_for_port


def cache_at(port: int) -> SharedCache:
    return SharedCache(
        f"redis://127.0.0.1:{port}/0",
        {"KEY_PREFIX": "t", "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}},
    )


@pytest.fixture
def redis_port():
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_two_workers_count_in_the_same_place(redis_port):
    first, second = cache_at(redis_port), cache_at(redis_port)
    first.add("n", 0, 60)
    first.incr("n")
    second.incr("n", 2)
    assert first.get("n") == second.get("n") == 3


def test_an_unreachable_redis_counts_in_the_worker_instead_of_failing():
    cache = cache_at(free_port())  # nothing listens there
    assert cache.add("n", 0, 60)
    assert cache.incr("n") == 1
    assert cache.get("n") == 1
    assert cache.get("missing", 7) == 7


@pytest.mark.parametrize("reachable", [True, False])
def test_a_limit_taken_at_the_same_moment_by_many_workers_admits_exactly_the_limit(redis_port, reachable):
    """Forty requests at once, each through its own worker's cache: ten fit, thirty are refused,
    and the refused ones leave the count at the limit (they count for nothing)."""
    import threading

    from config.cache import take

    port = redis_port if reachable else free_port()  # unreachable: each worker counts alone
    caches = [cache_at(port) for _ in range(40)] if reachable else [cache_at(port)] * 40
    start = threading.Barrier(40)
    results = []

    def request(cache):
        start.wait()
        results.append(take("invites:alice", 1, 10, 60, cache))

    threads = [threading.Thread(target=request, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results.count(True) == 10
    assert results.count(False) == 30
    assert caches[0].get("invites:alice") == 10
    assert not take("invites:alice", 1, 10, 60, caches[0])
    assert take("invites:alice", 1, 11, 60, caches[0])  # a higher limit has room for one more


@pytest.fixture
def expires_after_command(monkeypatch, redis_port):
    """Let the counter `n` expire right after the cache's `after`-th command to Redis (as a
    10-minute counter does, at some moment, under a request that is using it)."""
    import redis

    raw = redis.Redis(port=redis_port)
    sent = {"count": 0, "after": None}
    execute = redis.Redis.execute_command

    def execute_command(self, *args, **options):
        result = execute(self, *args, **options)
        if self is not raw:
            sent["count"] += 1
            if sent["count"] == sent["after"]:
                raw.delete(":1:".join(["t", "n"]))
        return result

    monkeypatch.setattr(redis.Redis, "execute_command", execute_command)

    def arm(after: int):
        sent["count"], sent["after"] = 0, after
        return raw

    return arm


@pytest.mark.parametrize("after", [1, 2, 3])
def test_a_counter_that_expires_mid_way_never_stays_without_an_expiry(
    redis_port, expires_after_command, after
):
    """A limit is an hourly (or 10-minute) one: a counter that expired between two of the
    cache's commands must not come back as a key that never expires (an address or a person
    refused for good once it reaches the limit again) nor below zero (a guess more, for good)."""
    from config.cache import give_back, take

    cache = cache_at(redis_port)
    assert take("n", 1, 5, 60, cache)
    raw = expires_after_command(after)
    give_back("n", 1, cache)
    assert raw.ttl("t:1:n") != -1  # -2: gone; otherwise a positive expiry
    assert int(raw.get("t:1:n") or 0) >= 0
    raw.set("t:1:n", 1, ex=60)
    expires_after_command(after)
    take("n", 1, 5, 60, cache)
    assert raw.ttl("t:1:n") != -1


def test_cache_handles_made_per_request_share_one_connection_to_redis(redis_port):
    """Django makes a cache handle per request (and per websocket: per asyncio context); each
    used to open its own connection pool, so a worker held a Redis connection for every open
    socket (1,000 sockets, 1,000 connections) and connected afresh for every request."""
    import redis

    handles = [cache_at(redis_port) for _ in range(20)]
    for handle in handles:
        assert handle.get("n", 0) == 0
    raw = redis.Redis(port=redis_port)
    connections = len(raw.client_list()) - 1  # this one
    assert connections == 1


def test_a_stopped_redis_holds_one_request_not_every_one(redis_port, caplog, monkeypatch):
    """A stopped Redis (SIGSTOP: it accepts connections and never answers) held every
    rate-limited request, logins and share links included, for its socket timeout: 4 s each
    (two 2 s timeouts). It is asked again only after RETRY_AFTER; one line says it is gone and
    one that it is back."""
    import logging
    import os
    import signal
    import time

    import psutil

    from config import cache as cache_module
    from config.cache import take

    monkeypatch.setattr(cache_module, "_REACHABILITY", {}, raising=False)
    monkeypatch.setattr(cache_module, "RETRY_AFTER", 3.0, raising=False)
    caplog.set_level(logging.WARNING, logger="config.cache")
    cache = cache_at(redis_port)
    assert take("logins:alice", 1, 100, 60, cache)
    server = next(p for p in psutil.Process().children() if p.name() == "redis-server")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        took = []
        for _ in range(6):
            start = time.monotonic()
            assert take("logins:alice", 1, 100, 60, cache_at(redis_port))  # a handle per request
            took.append(time.monotonic() - start)
        assert took[0] >= 1.5, took  # the first one waits for the timeout ...
        assert max(took[1:]) < 0.1, took  # ... the others do not
    finally:
        os.kill(server.pid, signal.SIGCONT)
    time.sleep(3.0)  # RETRY_AFTER: until then nobody asks Redis
    assert take("logins:alice", 1, 100, 60, cache)
    # Counted in Redis again, which kept its first count (and ran the command that timed out
    # once it was woken: 3).
    assert cache.get("logins:alice") in (2, 3)
    said = [r.getMessage() for r in caplog.records if r.name == "config.cache"]
    assert len(said) == 2, said
    assert "Timeout" in said[0]
    assert "works again" in said[1]
