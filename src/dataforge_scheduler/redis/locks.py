"""``RedisLockManager``: the ``LockManager`` port on Redis hashes and Lua scripts.

Each lock is a hash at ``Keys.lock(scope)`` with a millisecond TTL. Every mutation is one
Lua script that compares the stored token (or Celery task id) before it acts, so a
process whose lock expired can never extend or delete a lock someone else took since
(sibson/redbeat#127 is that bug in a peer).

The same scripts keep ``Keys.lock_index()``, a sorted set of the held locks' keys scored
by when each expires (Redis's own clock, in milliseconds), so ``list()`` costs what is
held, not what the whole keyspace holds: it drops members whose time has passed or whose
hash is gone (a lock released by a version without the index, a key deleted by hand),
then reads the rest, in one script.
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

# The lock operations as Lua functions, shared by the scripts below and by the run
# journal's start and finish scripts (redis.journal), so a lock has one implementation.
# acquire returns {1, token} (acquired), {2, token} (re-entered) or {0, HGETALL, PTTL}
# (held by another task); the others return 1 when they acted, 0 when not held as given.
LOCK_FUNCTIONS = """
local function index_until(index, key, ttl_ms)
  local now = redis.call('TIME')
  local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ttl_ms)
  redis.call('ZADD', index, expires, key)
end
local function acquire(key, index, token, task_id, execution_id, hostname, pid, acquired_at, ttl_ms)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'token', token, 'celery_task_id', task_id,
               'execution_id', execution_id, 'hostname', hostname, 'pid', pid,
               'acquired_at', acquired_at)
    redis.call('PEXPIRE', key, ttl_ms)
    index_until(index, key, ttl_ms)
    return {1, token}
  end
  if redis.call('HGET', key, 'celery_task_id') == task_id then
    if execution_id ~= '' then redis.call('HSET', key, 'execution_id', execution_id) end
    if hostname ~= '' then redis.call('HSET', key, 'hostname', hostname) end
    if pid ~= '' then redis.call('HSET', key, 'pid', pid) end
    redis.call('PEXPIRE', key, ttl_ms)
    index_until(index, key, ttl_ms)
    return {2, redis.call('HGET', key, 'token')}
  end
  return {0, redis.call('HGETALL', key), redis.call('PTTL', key)}
end
local function extend(key, index, token, ttl_ms)
  if redis.call('HGET', key, 'token') == token then
    redis.call('PEXPIRE', key, ttl_ms)
    index_until(index, key, ttl_ms)
    return 1
  end
  return 0
end
local function release_if(key, index, field, expected)
  if redis.call('HGET', key, field) == expected then
    redis.call('ZREM', index, key)
    return redis.call('DEL', key)
  end
  return 0
end
"""

# Every script below takes KEYS[1] the lock key and KEYS[2] the lock index.

# ARGV: token, celery_task_id, execution_id, hostname, pid, acquired_at, ttl_ms
_ACQUIRE = (
    LOCK_FUNCTIONS
    + """
return acquire(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
)

# ARGV: token, ttl_ms. Returns 1 when extended, 0 when not held by token.
_EXTEND = LOCK_FUNCTIONS + "return extend(KEYS[1], KEYS[2], ARGV[1], ARGV[2])"

# ARGV: field name, expected value. Deletes only on a match.
_RELEASE_IF = LOCK_FUNCTIONS + "return release_if(KEYS[1], KEYS[2], ARGV[1], ARGV[2])"

# Returns {HGETALL, PTTL} of what it deleted ({{}, -2} when nothing).
_FORCE_RELEASE = """
local fields = redis.call('HGETALL', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return {fields, pttl}
"""

# KEYS[1] the lock index. Drops the members whose time has passed or whose hash is gone
# and returns {key, HGETALL, PTTL} for each of the others. The lock keys are read from
# the index, not passed in: the index is what makes the listing cheap.
_LIST = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now_ms))
local held = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local pttl = redis.call('PTTL', key)
  if pttl == -2 then
    redis.call('ZREM', KEYS[1], key)
  else
    held[#held + 1] = {key, redis.call('HGETALL', key), pttl}
  end
end
return held
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
        self._list = client.register_script(_LIST)

    def acquire(self, scope: str, owner: LockOwner, *, ttl: float) -> Acquired | LockInfo:
        keys = self._keys.lock_keys(scope)
        args = acquire_args(owner, ttl=ttl, now=self._clock.now())
        with backend_errors(f"acquiring lock {scope!r}"):
            result = self._acquire(keys=keys, args=args)
        return lock_outcome(keys[0], scope, owner, result)

    def extend(self, scope: str, token: str, *, ttl: float) -> None:
        ttl_ms = ttl_milliseconds(ttl)
        with backend_errors(f"extending lock {scope!r}"):
            extended = int(self._extend(keys=self._keys.lock_keys(scope), args=[token, ttl_ms]))
        if not extended:
            raise LockLost(
                f"lock {scope!r} is no longer held by this token (expired or force-released)",
                scope=scope,
            )

    def release(self, scope: str, token: str) -> bool:
        with backend_errors(f"releasing lock {scope!r}"):
            released = self._release_if(keys=self._keys.lock_keys(scope), args=["token", token])
        return bool(int(released))

    def release_for_task(self, scope: str, celery_task_id: str) -> bool:
        keys = self._keys.lock_keys(scope)
        with backend_errors(f"releasing lock {scope!r} of task {celery_task_id}"):
            released = self._release_if(keys=keys, args=["celery_task_id", celery_task_id])
        return bool(int(released))

    def force_release(self, scope: str) -> LockInfo | None:
        keys = self._keys.lock_keys(scope)
        with backend_errors(f"force-releasing lock {scope!r}"):
            fields, pttl = self._force_release(keys=keys)
        info = _lock_info(keys[0], scope, _pairs(fields), int(pttl))
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
            held = self._list(keys=[self._keys.lock_index()])
        found: builtins.list[LockInfo] = []
        for raw_key, fields, pttl in held:
            key = _text(raw_key)
            info = _lock_info(key, self._keys.scope_of(key), _pairs(fields), int(pttl))
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda info: info.scope)


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
