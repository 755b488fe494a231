"""``RedisLockManager``: the ``LockManager`` port on Redis hashes and Lua scripts.

Each lock is a hash at ``Keys.lock(scope)`` with a millisecond TTL. Every mutation is one
Lua script that compares the stored token (or Celery task id) before it acts, so a
process whose lock expired can never extend or delete a lock someone else took since
(sibson/redbeat#127 is that bug in a peer).
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from dataforge_scheduler.core.clock import Clock, SystemClock
from dataforge_scheduler.core.timing import stored_utc
from dataforge_scheduler.core.values import Acquired, LockInfo, LockOwner, ttl_milliseconds
from dataforge_scheduler.errors import LockLost
from dataforge_scheduler.redis.connection import backend_errors
from dataforge_scheduler.redis.keys import Keys

__all__ = ["LOCK_FUNCTIONS", "RedisLockManager", "acquire_args", "lock_outcome"]

logger = logging.getLogger(__name__)

_LIST_BATCH = 500

# The lock operations as Lua functions, shared by the scripts below and by the run
# journal's start and finish scripts (redis.journal), so a lock has one implementation.
# acquire returns {1, token} (acquired), {2, token} (re-entered) or {0, HGETALL, PTTL}
# (held by another task); the others return 1 when they acted, 0 when not held as given.
LOCK_FUNCTIONS = """
local function acquire(key, token, task_id, execution_id, hostname, pid, acquired_at, ttl_ms)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'token', token, 'celery_task_id', task_id,
               'execution_id', execution_id, 'hostname', hostname, 'pid', pid,
               'acquired_at', acquired_at)
    redis.call('PEXPIRE', key, ttl_ms)
    return {1, token}
  end
  if redis.call('HGET', key, 'celery_task_id') == task_id then
    if execution_id ~= '' then redis.call('HSET', key, 'execution_id', execution_id) end
    if hostname ~= '' then redis.call('HSET', key, 'hostname', hostname) end
    if pid ~= '' then redis.call('HSET', key, 'pid', pid) end
    redis.call('PEXPIRE', key, ttl_ms)
    return {2, redis.call('HGET', key, 'token')}
  end
  return {0, redis.call('HGETALL', key), redis.call('PTTL', key)}
end
local function extend(key, token, ttl_ms)
  if redis.call('HGET', key, 'token') == token then
    redis.call('PEXPIRE', key, ttl_ms)
    return 1
  end
  return 0
end
local function release_if(key, field, expected)
  if redis.call('HGET', key, field) == expected then
    return redis.call('DEL', key)
  end
  return 0
end
"""

# KEYS[1] lock key; ARGV: token, celery_task_id, execution_id, hostname, pid, acquired_at, ttl_ms
_ACQUIRE = (
    LOCK_FUNCTIONS
    + """
return acquire(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
)

# KEYS[1] lock key; ARGV: token, ttl_ms. Returns 1 when extended, 0 when not held by token.
_EXTEND = LOCK_FUNCTIONS + "return extend(KEYS[1], ARGV[1], ARGV[2])"

# KEYS[1] lock key; ARGV: field name, expected value. Deletes only on a match.
_RELEASE_IF = LOCK_FUNCTIONS + "return release_if(KEYS[1], ARGV[1], ARGV[2])"

# KEYS[1] lock key. Returns {HGETALL, PTTL} of what it deleted ({{}, -2} when nothing).
_FORCE_RELEASE = """
local fields = redis.call('HGETALL', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
return {fields, pttl}
"""


class RedisLockManager:
    """The ``LockManager`` port on Redis (see the Protocol for the invariants)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock | None = None) -> None:
        self._client = client
        self._keys = keys
        self._clock: Clock = clock if clock is not None else SystemClock()
        # register_script only hashes the text; the script is loaded on first use.
        self._acquire = client.register_script(_ACQUIRE)
        self._extend = client.register_script(_EXTEND)
        self._release_if = client.register_script(_RELEASE_IF)
        self._force_release = client.register_script(_FORCE_RELEASE)

    def acquire(self, scope: str, owner: LockOwner, *, ttl: float) -> Acquired | LockInfo:
        key = self._keys.lock(scope)
        args = acquire_args(owner, ttl=ttl, now=self._clock.now())
        with backend_errors(f"acquiring lock {scope!r}"):
            result = self._acquire(keys=[key], args=args)
        return lock_outcome(key, scope, owner, result)

    def extend(self, scope: str, token: str, *, ttl: float) -> None:
        key = self._keys.lock(scope)
        ttl_ms = ttl_milliseconds(ttl)
        with backend_errors(f"extending lock {scope!r}"):
            extended = int(self._extend(keys=[key], args=[token, ttl_ms]))
        if not extended:
            raise LockLost(
                f"lock {scope!r} is no longer held by this token (expired or force-released)",
                scope=scope,
            )

    def release(self, scope: str, token: str) -> bool:
        key = self._keys.lock(scope)
        with backend_errors(f"releasing lock {scope!r}"):
            return bool(int(self._release_if(keys=[key], args=["token", token])))

    def release_for_task(self, scope: str, celery_task_id: str) -> bool:
        key = self._keys.lock(scope)
        with backend_errors(f"releasing lock {scope!r} of task {celery_task_id}"):
            released = self._release_if(keys=[key], args=["celery_task_id", celery_task_id])
        return bool(int(released))

    def force_release(self, scope: str) -> LockInfo | None:
        key = self._keys.lock(scope)
        with backend_errors(f"force-releasing lock {scope!r}"):
            fields, pttl = self._force_release(keys=[key])
        info = _lock_info(key, scope, _pairs(fields), int(pttl))
        if info is not None:
            logger.warning("force-released lock %s held by task %s", scope, info.celery_task_id)
        return info

    def get(self, scope: str) -> LockInfo | None:
        key = self._keys.lock(scope)
        with backend_errors(f"reading lock {scope!r}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hgetall(key)
            pipe.pttl(key)
            fields, pttl = pipe.execute()
        return _lock_info(key, scope, _mapping(fields), int(pttl))

    def list(self) -> builtins.list[LockInfo]:
        with backend_errors("listing locks"):
            names = [
                _text(name)
                for name in self._client.scan_iter(match=self._keys.lock_pattern(), count=500)
            ]
            found: builtins.list[LockInfo] = []
            for start in range(0, len(names), _LIST_BATCH):
                found.extend(self._read_batch(names[start : start + _LIST_BATCH]))
        return sorted(found, key=lambda info: info.scope)

    def _read_batch(self, names: builtins.list[str]) -> Iterable[LockInfo]:
        # Not a transaction: each key is read on its own; a lock that vanishes between
        # SCAN and the read is simply not listed.
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
            pipe.pttl(name)
        replies = pipe.execute()
        for index, name in enumerate(names):
            fields, pttl = replies[2 * index], replies[2 * index + 1]
            info = _lock_info(name, self._keys.scope_of(name), _mapping(fields), int(pttl))
            if info is not None:
                yield info


def acquire_args(owner: LockOwner, *, ttl: float, now: datetime) -> builtins.list[str | int]:
    """The arguments of ``acquire()`` in ``LOCK_FUNCTIONS``, a fresh token first."""
    return [
        secrets.token_hex(16),
        owner.celery_task_id,
        _optional(owner.execution_id),
        _optional(owner.hostname),
        _optional(owner.pid),
        now.isoformat(),
        ttl_milliseconds(ttl),
    ]


def lock_outcome(key: str, scope: str, owner: LockOwner, result: Any) -> Acquired | LockInfo:
    """What ``acquire()`` in ``LOCK_FUNCTIONS`` answered, as the port's values."""
    outcome = int(result[0])
    if outcome == 0:
        return _build_info(key, scope, _pairs(result[1]), int(result[2]))
    if outcome == 2:
        logger.debug("re-entered lock %s for task %s", scope, owner.celery_task_id)
    return Acquired(token=_text(result[1]), reentered=outcome == 2)


def _optional(value: object | None) -> str:
    return "" if value is None else str(value)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _pairs(flat: Iterable[Any]) -> dict[str, str]:
    items = [_text(item) for item in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


def _mapping(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(name): _text(value) for name, value in fields.items()}


def _lock_info(key: str, scope: str, fields: dict[str, str], pttl: int) -> LockInfo | None:
    """A LockInfo from a hash's fields and PTTL; None when the key does not exist."""
    if pttl == -2 or not fields:
        return None
    return _build_info(key, scope, fields, pttl)


def _build_info(key: str, scope: str, fields: dict[str, str], pttl: int) -> LockInfo:
    execution_id, pid = fields.get("execution_id", ""), fields.get("pid", "")
    return LockInfo(
        key=key,
        scope=scope,
        token=fields.get("token", ""),
        celery_task_id=fields.get("celery_task_id", ""),
        execution_id=int(execution_id) if execution_id else None,
        hostname=fields.get("hostname") or None,
        pid=int(pid) if pid else None,
        acquired_at=_parse_instant(fields.get("acquired_at", "")),
        ttl_seconds=None if pttl < 0 else pttl / 1000,
    )


def _parse_instant(text: str) -> datetime:
    try:
        return stored_utc(datetime.fromisoformat(text))
    except ValueError:
        # A hash written by hand or by a foreign tool: keep the lock visible anyway.
        logger.warning("lock hash has an unreadable acquired_at %r", text)
        return datetime(1970, 1, 1, tzinfo=UTC)
