"""Fixtures that run every contract test against the memory and the Redis implementation.

``backend`` is parametrized over ``memory`` and ``redis``; ``locks``, ``logbus`` and
``notices`` build the matching implementation of each port, all sharing one
``ManualClock`` (``clock``). A test that needs time to pass calls
``let_time_pass(seconds, until=condition)``: for memory it moves the clock (no sleeping)
and requires the condition at once; for Redis it lets the real TTL run out and polls the
condition for at most two seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.ports import ChangeNotices, LockManager, LogBus
from dataforge_scheduler.memory import MemoryChangeNotices, MemoryLockManager, MemoryLogBus
from dataforge_scheduler.redis import Keys, RedisChangeNotices, RedisLockManager, RedisLogBus

REDIS_EXPIRY_BUDGET = 2.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    """Which implementation family the test runs against."""
    return str(request.param)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def redis_keys(backend: str, request: pytest.FixtureRequest) -> tuple[Any, Keys] | None:
    """(client, keys) for the Redis backend; None for memory (so memory needs no Redis)."""
    if backend != "redis":
        return None
    client = request.getfixturevalue("redis_client")
    return client, Keys(request.getfixturevalue("key_prefix"))


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
def locks(redis_keys: tuple[Any, Keys] | None, clock: ManualClock) -> LockManager:
    if redis_keys is None:
        return MemoryLockManager(clock=clock)
    return RedisLockManager(*redis_keys, clock=clock)


@pytest.fixture
def logbus(redis_keys: tuple[Any, Keys] | None, clock: ManualClock) -> LogBus:
    if redis_keys is None:
        return MemoryLogBus(clock=clock)
    return RedisLogBus(*redis_keys)


@pytest.fixture
def notices(redis_keys: tuple[Any, Keys] | None) -> ChangeNotices:
    if redis_keys is None:
        return MemoryChangeNotices()
    return RedisChangeNotices(*redis_keys)
