"""``MemoryLockManager``: the ``LockManager`` port in one process, for the demo and fixtures.

A dict of held locks behind a ``threading.Lock``; every operation that the Redis twin does
in one Lua script is one critical section here. Time comes from the injected clock, and an
entry whose expiry has passed is dropped the moment anything looks at it, as Redis does.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from dataforge_scheduler.core.clock import Clock, SystemClock
from dataforge_scheduler.core.values import Acquired, LockInfo, LockOwner, ttl_milliseconds
from dataforge_scheduler.errors import ConfigurationError, LockLost

__all__ = ["MemoryLockManager"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Held:
    token: str
    owner: LockOwner
    acquired_at: datetime
    expires_at: datetime


class MemoryLockManager:
    """The ``LockManager`` port in memory (see the Protocol for the invariants)."""

    def __init__(
        self, *, clock: Clock | None = None, lock_key: Callable[[str], str] | None = None
    ) -> None:
        """``lock_key`` names the key a scope's lock would have on Redis (shown in
        ``LockInfo.key``); the backend factory passes ``redis.keys.Keys(prefix).lock``."""
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock_key = lock_key if lock_key is not None else _default_key
        self._mutex = threading.Lock()
        self._held: dict[str, _Held] = {}

    def clear(self) -> int:
        """Drop every lock (test clean-up); how many were held."""
        with self._mutex:
            count = len(self._held)
            self._held.clear()
        return count

    def acquire(self, scope: str, owner: LockOwner, *, ttl: float) -> Acquired | LockInfo:
        _check_scope(scope)
        lifetime = timedelta(milliseconds=ttl_milliseconds(ttl))
        with self._mutex:
            now = self._clock.now()
            held = self._live(scope, now)
            if held is None:
                token = secrets.token_hex(16)
                self._held[scope] = _Held(token, owner, now, now + lifetime)
                return Acquired(token=token, reentered=False)
            if held.owner.celery_task_id != owner.celery_task_id:
                return _info(self._lock_key(scope), scope, held, now)
            merged = LockOwner(
                celery_task_id=owner.celery_task_id,
                execution_id=_pick(owner.execution_id, held.owner.execution_id),
                hostname=_pick(owner.hostname, held.owner.hostname),
                pid=_pick(owner.pid, held.owner.pid),
            )
            self._held[scope] = replace(held, owner=merged, expires_at=now + lifetime)
        logger.debug("re-entered lock %s for task %s", scope, owner.celery_task_id)
        return Acquired(token=held.token, reentered=True)

    def extend(self, scope: str, token: str, *, ttl: float) -> None:
        _check_scope(scope)
        lifetime = timedelta(milliseconds=ttl_milliseconds(ttl))
        with self._mutex:
            now = self._clock.now()
            held = self._live(scope, now)
            if held is None or held.token != token:
                raise LockLost(
                    f"lock {scope!r} is no longer held by this token (expired or force-released)",
                    scope=scope,
                )
            self._held[scope] = replace(held, expires_at=now + lifetime)

    def release(self, scope: str, token: str) -> bool:
        _check_scope(scope)
        with self._mutex:
            held = self._live(scope, self._clock.now())
            if held is None or held.token != token:
                return False
            del self._held[scope]
            return True

    def release_for_task(self, scope: str, celery_task_id: str) -> bool:
        _check_scope(scope)
        with self._mutex:
            held = self._live(scope, self._clock.now())
            if held is None or held.owner.celery_task_id != celery_task_id:
                return False
            del self._held[scope]
            return True

    def force_release(self, scope: str) -> LockInfo | None:
        _check_scope(scope)
        with self._mutex:
            now = self._clock.now()
            held = self._live(scope, now)
            if held is None:
                return None
            del self._held[scope]
        logger.warning("force-released lock %s held by task %s", scope, held.owner.celery_task_id)
        return _info(self._lock_key(scope), scope, held, now)

    def get(self, scope: str) -> LockInfo | None:
        _check_scope(scope)
        with self._mutex:
            now = self._clock.now()
            held = self._live(scope, now)
            return None if held is None else _info(self._lock_key(scope), scope, held, now)

    def list(self) -> builtins.list[LockInfo]:
        with self._mutex:
            now = self._clock.now()
            found = [
                _info(self._lock_key(scope), scope, held, now)
                for scope in builtins.list(self._held)
                if (held := self._live(scope, now)) is not None
            ]
        return sorted(found, key=lambda info: info.scope)

    def _live(self, scope: str, now: datetime) -> _Held | None:
        """The unexpired holder of ``scope``; drops an expired one. Call under the mutex."""
        held = self._held.get(scope)
        if held is not None and held.expires_at <= now:
            del self._held[scope]
            return None
        return held


def _check_scope(scope: str) -> None:
    if not scope:
        raise ConfigurationError("lock scope must be non-empty", field="scope")


def _pick(new: _T | None, old: _T | None) -> _T | None:
    return old if new is None else new


def _default_key(scope: str) -> str:
    # a stand-alone manager (tests) has no prefix; the backend factory injects Keys
    return scope


def _info(key: str, scope: str, held: _Held, now: datetime) -> LockInfo:
    return LockInfo(
        key=key,
        scope=scope,
        token=held.token,
        celery_task_id=held.owner.celery_task_id,
        execution_id=held.owner.execution_id,
        hostname=held.owner.hostname,
        pid=held.owner.pid,
        acquired_at=held.acquired_at,
        ttl_seconds=(held.expires_at - now).total_seconds(),
    )
