"""Fixtures that run every contract test against the memory and the Redis implementation.

``backend`` is parametrized over ``memory`` and ``redis``; ``family`` is that
``core.ports.Backend`` (``MemoryBackend`` or ``RedisBackend``, built as the backend
factory builds them, on one key prefix), and ``locks``, ``logbus``, ``notices`` and
``log_feed`` are its roles, all sharing one ``ManualClock`` (``clock``). A test that
needs time to pass calls ``let_time_pass(seconds, until=condition)``: for memory it moves
the clock (no sleeping) and requires the condition at once; for Redis it lets the real
TTL run out and polls the condition for at most two seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.ports import AsyncLogFeed, Backend, ChangeNotices, LockManager, LogBus
from dataforge_scheduler.memory.backend import MemoryBackend
from dataforge_scheduler.redis.backend import RedisBackend
from dataforge_scheduler.redis.keys import Keys

REDIS_EXPIRY_BUDGET = 2.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    """Which implementation family the test runs against."""
    return str(request.param)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def let_time_pass(backend: str, clock: ManualClock) -> Callable[..., None]:
    def let_time_pass(seconds: float, *, until: Callable[[], bool]) -> None:
        if backend == "memory":
            clock.advance(seconds)
            assert until(), f"condition still false after advancing the clock {seconds} s"
            return
        deadline = time.monotonic() + seconds + REDIS_EXPIRY_BUDGET
        while not until():
            if time.monotonic() > deadline:
                pytest.fail(f"condition still false {REDIS_EXPIRY_BUDGET} s after the TTL")
            time.sleep(0.01)

    return let_time_pass


@pytest.fixture
def family(
    backend: str, clock: ManualClock, key_prefix: str, request: pytest.FixtureRequest
) -> Iterator[Backend]:
    keys = Keys(key_prefix)
    if backend == "memory":
        yield MemoryBackend(clock=clock, lock_key=keys.lock)
        return
    request.getfixturevalue("redis_client")  # deletes the test's keys afterwards
    built = RedisBackend(request.getfixturevalue("redis_url"), keys=keys, clock=clock)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def locks(family: Backend) -> LockManager:
    return family.locks


@pytest.fixture
def logbus(family: Backend) -> LogBus:
    return family.logbus


@pytest.fixture
def notices(family: Backend) -> ChangeNotices:
    return family.notices


@pytest.fixture
def log_feed(family: Backend) -> AsyncLogFeed:
    return family.log_feed
