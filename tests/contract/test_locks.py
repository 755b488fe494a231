"""The LockManager contract, run against MemoryLockManager and RedisLockManager."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.ports import Acquired, LockInfo, LockManager, LockOwner
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError, LockLost
from dataforge_scheduler.redis.keys import Keys, schedule_scope, task_name_scope
from dataforge_scheduler.redis.locks import RedisLockManager

TimePasser = Callable[..., None]

SCOPE = schedule_scope(12)
OWNER = LockOwner(celery_task_id="celery-a", execution_id=7, hostname="w1", pid=101)
OTHER = LockOwner(celery_task_id="celery-b", execution_id=8, hostname="w2", pid=202)


def _acquired(result: Acquired | LockInfo) -> Acquired:
    assert isinstance(result, Acquired), f"expected the lock to be acquired, got {result!r}"
    return result


def _held(locks: LockManager, scope: str = SCOPE) -> LockInfo:
    info = locks.get(scope)
    assert info is not None, f"expected {scope!r} to be held"
    return info


def test_scope_names() -> None:
    assert schedule_scope(12) == "task:12"
    assert task_name_scope("dataforge.sync") == "name:dataforge.sync"
    with pytest.raises(ConfigurationError):
        task_name_scope("")


def test_acquire_free_scope_records_the_owner(locks: LockManager, clock: ManualClock) -> None:
    got = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    assert got.reentered is False
    assert len(got.token) == 32
    int(got.token, 16)
    info = _held(locks)
    assert info.scope == SCOPE
    assert info.key.endswith(f":lock:{SCOPE}")
    assert (info.token, info.celery_task_id) == (got.token, "celery-a")
    assert (info.execution_id, info.hostname, info.pid) == (7, "w1", 101)
    assert info.acquired_at == clock.now()
    assert info.acquired_at.tzinfo is not None
    assert info.ttl_seconds is not None
    assert 25 < info.ttl_seconds <= 30


def test_owner_details_are_optional(locks: LockManager) -> None:
    _acquired(locks.acquire(SCOPE, LockOwner(celery_task_id="bare"), ttl=30))

    info = _held(locks)
    assert (info.execution_id, info.hostname, info.pid) == (None, None, None)


def test_held_by_other_task_returns_the_holder(locks: LockManager) -> None:
    first = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    result = locks.acquire(SCOPE, OTHER, ttl=30)

    assert isinstance(result, LockInfo)
    assert (result.token, result.celery_task_id, result.pid) == (first.token, "celery-a", 101)
    assert result.ttl_seconds is not None
    assert result.ttl_seconds > 25
    assert _held(locks).celery_task_id == "celery-a"


def test_reentry_by_same_task_keeps_token_refreshes_ttl_and_owner(locks: LockManager) -> None:
    first = _acquired(locks.acquire(SCOPE, OWNER, ttl=5))
    acquired_at = _held(locks).acquired_at
    retry = LockOwner(celery_task_id="celery-a", execution_id=9, hostname="w3", pid=303)

    again = _acquired(locks.acquire(SCOPE, retry, ttl=60))

    assert again == Acquired(token=first.token, reentered=True)
    info = _held(locks)
    assert info.ttl_seconds is not None
    assert info.ttl_seconds > 30
    assert (info.execution_id, info.hostname, info.pid) == (9, "w3", 303)
    assert info.acquired_at == acquired_at


def test_reentry_without_details_keeps_the_stored_ones(locks: LockManager) -> None:
    first = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    again = _acquired(locks.acquire(SCOPE, LockOwner(celery_task_id="celery-a"), ttl=30))

    assert again.token == first.token
    info = _held(locks)
    assert (info.execution_id, info.hostname, info.pid) == (7, "w1", 101)


def test_extend_by_owner_pushes_the_ttl(locks: LockManager) -> None:
    got = _acquired(locks.acquire(SCOPE, OWNER, ttl=5))

    locks.extend(SCOPE, got.token, ttl=120)

    info = _held(locks)
    assert info.ttl_seconds is not None
    assert info.ttl_seconds > 60
    assert info.token == got.token


def test_extend_with_a_foreign_token_raises_and_changes_nothing(locks: LockManager) -> None:
    _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    with pytest.raises(LockLost) as caught:
        locks.extend(SCOPE, "0" * 32, ttl=600)

    assert caught.value.scope == SCOPE  # type: ignore[attr-defined]
    ttl = _held(locks).ttl_seconds
    assert ttl is not None
    assert ttl <= 30


def test_lock_expires_and_extend_then_raises(locks: LockManager, let_time_pass: TimePasser) -> None:
    got = _acquired(locks.acquire(SCOPE, OWNER, ttl=0.05))

    let_time_pass(0.06, until=lambda: locks.get(SCOPE) is None)

    with pytest.raises(LockLost):
        locks.extend(SCOPE, got.token, ttl=30)
    assert locks.get(SCOPE) is None, "extend must never re-acquire"
    assert locks.list() == []
    assert _acquired(locks.acquire(SCOPE, OTHER, ttl=30)).reentered is False


def test_extend_after_force_release_raises_and_spares_the_new_holder(locks: LockManager) -> None:
    old = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))
    locks.force_release(SCOPE)
    new = _acquired(locks.acquire(SCOPE, OTHER, ttl=10))

    with pytest.raises(LockLost):
        locks.extend(SCOPE, old.token, ttl=600)

    info = _held(locks)
    assert info.token == new.token
    assert info.ttl_seconds is not None
    assert info.ttl_seconds <= 10
    assert locks.release(SCOPE, old.token) is False
    assert locks.get(SCOPE) is not None


def test_release_needs_the_token(locks: LockManager) -> None:
    got = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    assert locks.release(SCOPE, "f" * 32) is False
    assert _held(locks).token == got.token
    assert locks.release(SCOPE, got.token) is True
    assert locks.get(SCOPE) is None
    assert locks.release(SCOPE, got.token) is False


def test_release_for_task_matches_the_celery_task_id(locks: LockManager) -> None:
    _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    assert locks.release_for_task(SCOPE, "celery-b") is False
    assert locks.get(SCOPE) is not None
    assert locks.release_for_task(SCOPE, "celery-a") is True
    assert locks.get(SCOPE) is None
    assert locks.release_for_task(SCOPE, "celery-a") is False


def test_force_release_returns_what_it_released(locks: LockManager) -> None:
    got = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    released = locks.force_release(SCOPE)

    assert released is not None
    assert (released.token, released.celery_task_id, released.execution_id) == (
        got.token,
        "celery-a",
        7,
    )
    assert locks.get(SCOPE) is None
    assert locks.force_release(SCOPE) is None


def test_list_reports_every_lock_with_its_ttl(locks: LockManager) -> None:
    assert locks.list() == []
    scopes = [schedule_scope(n) for n in range(120)] + [task_name_scope("dataforge.sync")]
    for n, scope in enumerate(scopes):
        owner = LockOwner(celery_task_id=f"celery-{n}", execution_id=n)
        _acquired(locks.acquire(scope, owner, ttl=60))

    listed = locks.list()

    assert [info.scope for info in listed] == sorted(scopes)
    by_scope = {info.scope: info for info in listed}
    assert by_scope["task:42"].celery_task_id == "celery-42"
    assert by_scope["name:dataforge.sync"].execution_id == 120
    assert all(info.ttl_seconds is not None and info.ttl_seconds > 30 for info in listed)


def test_list_and_get_drop_expired_locks(locks: LockManager, let_time_pass: TimePasser) -> None:
    _acquired(locks.acquire("task:1", OWNER, ttl=0.05))
    _acquired(locks.acquire("task:2", OTHER, ttl=60))

    let_time_pass(0.06, until=lambda: locks.get("task:1") is None)

    assert [info.scope for info in locks.list()] == ["task:2"]


def test_only_one_of_many_concurrent_tasks_gets_the_lock(locks: LockManager) -> None:
    results: list[Acquired | LockInfo] = []
    barrier = threading.Barrier(8)

    def contend(n: int) -> None:
        barrier.wait()
        results.append(locks.acquire(SCOPE, LockOwner(celery_task_id=f"t{n}"), ttl=30))

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    winners = [r for r in results if isinstance(r, Acquired)]
    assert len(results) == 8
    assert len(winners) == 1
    holder = _held(locks)
    assert holder.token == winners[0].token
    assert all(r.token == holder.token for r in results if isinstance(r, LockInfo))


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf])
def test_a_bad_ttl_is_refused(locks: LockManager, ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        locks.acquire(SCOPE, OWNER, ttl=ttl)


def test_a_sub_millisecond_ttl_is_one_millisecond(
    locks: LockManager, let_time_pass: TimePasser
) -> None:
    _acquired(locks.acquire(SCOPE, OWNER, ttl=0.0001))

    let_time_pass(0.001, until=lambda: locks.get(SCOPE) is None)
    assert locks.get(SCOPE) is None


def test_an_empty_scope_is_refused(locks: LockManager) -> None:
    with pytest.raises(ConfigurationError, match="scope"):
        locks.acquire("", OWNER, ttl=1)


# ---------------------------------------------------------------- Redis specifics


@pytest.mark.redis
def test_redis_lock_is_the_documented_hash(redis_client: Any, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    locks = RedisLockManager(redis_client, keys)
    got = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))

    key = f"{key_prefix}:lock:task:12"
    stored = {k.decode(): v.decode() for k, v in redis_client.hgetall(key).items()}
    assert stored.pop("token") == got.token
    acquired_at = datetime.fromisoformat(stored.pop("acquired_at"))
    assert acquired_at.utcoffset() is not None
    assert abs((acquired_at - datetime.now(UTC)).total_seconds()) < 60
    assert stored == {
        "celery_task_id": "celery-a",
        "execution_id": "7",
        "hostname": "w1",
        "pid": "101",
    }
    assert 25_000 < redis_client.pttl(key) <= 30_000
    assert _held(locks).key == key


def _scans(redis_client: Any) -> int:
    stats = redis_client.info("commandstats").get("cmdstat_scan", {})
    return int(stats.get("calls", 0))


@pytest.mark.redis
def test_redis_list_reads_the_index_not_the_keyspace(redis_client: Any, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    locks = RedisLockManager(redis_client, keys)
    redis_client.mset({f"{key_prefix}:noise:{n}": "x" for n in range(2000)})
    got = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))
    _acquired(locks.acquire("task:13", OTHER, ttl=30))
    scans = _scans(redis_client)

    assert [info.scope for info in locks.list()] == ["task:12", "task:13"]

    assert _scans(redis_client) == scans
    members = redis_client.zrange(keys.lock_index(), 0, -1, withscores=True)
    index = {key.decode(): score for key, score in members}
    assert set(index) == {keys.lock(SCOPE), keys.lock("task:13")}
    now_ms = redis_client.time()[0] * 1000
    assert now_ms + 25_000 < index[keys.lock(SCOPE)] <= now_ms + 31_000
    locks.extend(SCOPE, got.token, ttl=300)
    assert redis_client.zscore(keys.lock_index(), keys.lock(SCOPE)) > now_ms + 290_000
    assert locks.release(SCOPE, got.token) is True
    assert locks.force_release("task:13") is not None
    assert redis_client.zcard(keys.lock_index()) == 0


@pytest.mark.redis
def test_redis_list_drops_stale_index_members(redis_client: Any, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    locks = RedisLockManager(redis_client, keys)
    _acquired(locks.acquire("task:1", OWNER, ttl=0.05))
    _acquired(locks.acquire("task:2", OTHER, ttl=60))
    _acquired(locks.acquire("task:3", LockOwner(celery_task_id="celery-c"), ttl=60))
    redis_client.delete(keys.lock("task:3"))  # deleted by hand: its member is stale
    deadline = time.monotonic() + 5
    while redis_client.exists(keys.lock("task:1")) and time.monotonic() < deadline:
        time.sleep(0.01)

    assert [info.scope for info in locks.list()] == ["task:2"]

    assert redis_client.zrange(keys.lock_index(), 0, -1) == [keys.lock("task:2").encode()]


@pytest.mark.redis
def test_redis_lock_works_with_a_decoding_client(redis_url: str, key_prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        locks = RedisLockManager(client, Keys(key_prefix))
        got = _acquired(locks.acquire(SCOPE, OWNER, ttl=30))
        assert _held(locks).token == got.token
        assert [info.token for info in locks.list()] == [got.token]
        assert locks.release(SCOPE, got.token) is True
    finally:
        client.delete(Keys(key_prefix).lock(SCOPE))
        client.close()


def test_redis_connection_errors_become_backend_unavailable() -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    locks = RedisLockManager(client, Keys("dftest-unreachable"))
    try:
        with pytest.raises(BackendUnavailable) as caught:
            locks.acquire(SCOPE, OWNER, ttl=1)
        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
        with pytest.raises(BackendUnavailable):
            locks.list()
    finally:
        client.close()
