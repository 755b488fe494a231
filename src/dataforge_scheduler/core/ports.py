"""The ports: one Protocol per Redis-backed role, with the invariants every implementation keeps.

A port is what the Celery face, the API and the beat scheduler depend on; ``redis/`` holds
the production implementations (``RedisLockManager``, ``RedisLogBus``,
``RedisChangeNotices``) and ``memory/`` their in-process twins. Both pass the same contract
suite in ``tests/contract``, so a behaviour stated in a docstring here holds for both. This
module also owns the small value types the roles exchange and the rules both sides share
(scope names, TTL rounding, the live-message format). It imports nothing but the standard
library.
"""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from dataforge_scheduler.errors import ConfigurationError

__all__ = [
    "Acquired",
    "ChangeNotices",
    "LockInfo",
    "LockManager",
    "LockOwner",
    "LogBus",
    "LogEnd",
    "LogLine",
    "LogSubscription",
    "NoticeListener",
    "decode_live_message",
    "encode_live_end",
    "encode_live_line",
    "schedule_id_of_scope",
    "schedule_scope",
    "task_name_scope",
    "ttl_milliseconds",
    "writable_line",
]


# ---------------------------------------------------------------- locks


@dataclass(frozen=True)
class LockOwner:
    """Who takes a lock: the Celery task id is the identity, the rest is for operators."""

    celery_task_id: str
    execution_id: int | None = None
    hostname: str | None = None
    pid: int | None = None

    def __post_init__(self) -> None:
        if not self.celery_task_id:
            raise ConfigurationError(
                "LockOwner.celery_task_id must be a non-empty string",
                field="celery_task_id",
                value=self.celery_task_id,
            )


@dataclass(frozen=True)
class LockInfo:
    """A held lock as an operator sees it; ``ttl_seconds`` is the time left (None: no expiry)."""

    key: str
    scope: str
    token: str
    celery_task_id: str
    execution_id: int | None
    hostname: str | None
    pid: int | None
    acquired_at: datetime
    ttl_seconds: float | None


@dataclass(frozen=True)
class Acquired:
    """A successful ``acquire``: the token to extend and release with."""

    token: str
    reentered: bool


class LockManager(Protocol):
    """Mutual exclusion per scope (``task:<id>`` or ``name:<task name>``), with a TTL.

    Invariants every implementation keeps:

    - At most one holder per scope. A holder is identified by its **Celery task id**; the
      random ``token`` proves ownership for ``extend`` and ``release``.
    - ``acquire`` is re-entrant for the same Celery task id: Celery publishes a retry before
      the old attempt finishes, so the new attempt (maybe in another process that never
      saw the token) must get in. Re-entering refreshes the TTL, replaces the owner details
      it is given (execution id, hostname, pid; ``None`` keeps the stored value), keeps
      ``acquired_at`` and returns the existing token with ``reentered=True``.
    - Every mutation compares before it acts, atomically: ``extend`` and ``release`` act only
      when the stored token matches, ``release_for_task`` only when the stored Celery task id
      matches. A lock that expired or was force-released is never silently re-acquired by
      ``extend``: it raises ``LockLost``.
    - Every lock has a TTL (seconds, rounded up to whole milliseconds, at least 1 ms), so a
      SIGKILLed worker cannot hold a scope forever.
    - An expired lock is gone: ``get`` returns None, ``list`` omits it, ``acquire`` succeeds.
    - Backend failures raise ``BackendUnavailable``; bad arguments ``ConfigurationError``.
    """

    def acquire(self, scope: str, owner: LockOwner, *, ttl: float) -> Acquired | LockInfo:
        """Take the lock or re-enter it; when another task holds it, return the holder."""
        ...

    def extend(self, scope: str, token: str, *, ttl: float) -> None:
        """Reset the TTL to ``ttl``; raise ``LockLost`` unless ``token`` holds the scope."""
        ...

    def release(self, scope: str, token: str) -> bool:
        """Release if ``token`` holds the scope; False (and nothing changes) otherwise."""
        ...

    def release_for_task(self, scope: str, celery_task_id: str) -> bool:
        """Release if ``celery_task_id`` holds the scope (main-process handlers know no token)."""
        ...

    def force_release(self, scope: str) -> LockInfo | None:
        """Release whoever holds the scope (admin); return what was released."""
        ...

    def get(self, scope: str) -> LockInfo | None:
        """The holder of ``scope``, or None."""
        ...

    def list(self) -> builtins.list[LockInfo]:
        """Every held lock, sorted by scope (Redis walks keys with SCAN, never KEYS)."""
        ...


def schedule_scope(scheduled_task_id: int) -> str:
    """The lock scope of one schedule row: ``task:<id>``."""
    return f"task:{int(scheduled_task_id)}"


def schedule_id_of_scope(scope: str) -> int | None:
    """The schedule id a ``task:<id>`` scope names; None for any other scope."""
    prefix, _, rest = scope.partition(":")
    return int(rest) if prefix == "task" and rest.isascii() and rest.isdigit() else None


def task_name_scope(task_name: str) -> str:
    """The lock scope shared by every run of a Celery task name: ``name:<task_name>``."""
    if not task_name:
        raise ConfigurationError("task_name must be non-empty for a lock scope", field="task_name")
    return f"name:{task_name}"


def ttl_milliseconds(ttl: float) -> int:
    """``ttl`` seconds as whole milliseconds, rounded up, at least 1.

    Raises ``ConfigurationError`` for a TTL that is not a positive finite number.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ConfigurationError(
            f"ttl must be a finite number of seconds, got {ttl!r}", field="ttl"
        )
    if ttl <= 0:
        raise ConfigurationError(f"ttl must be positive, got {ttl!r}", field="ttl")
    return max(1, math.ceil(ttl * 1000))


# ---------------------------------------------------------------- log bus


@dataclass(frozen=True)
class LogLine:
    """One line of a run's log; ``seq`` is its 0-based index in that log."""

    seq: int
    text: str


@dataclass(frozen=True)
class LogEnd:
    """The run ended with ``status`` (an ``ExecutionStatus`` value)."""

    status: str


class LogSubscription(Protocol):
    """A live feed of one run's log: lines in ``seq`` order, then one ``LogEnd``."""

    def get(self, timeout: float) -> LogLine | LogEnd | None:
        """The next event, waiting up to ``timeout`` seconds; None when none came."""
        ...

    def close(self) -> None:
        """Unsubscribe; idempotent. ``get`` after close returns None at once."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class LogBus(Protocol):
    """A run's log: an append-only list for replay plus live push to subscribers.

    Invariants every implementation keeps:

    - ``append`` is atomic per batch: the lines get consecutive, unique, dense ``seq``
      numbers in the order given, even with concurrent appenders, and are pushed live in
      that order. It returns the log's new length.
    - A subscription sees every line appended after ``subscribe`` returned. To follow a
      run without a gap, subscribe first, then ``read`` the backlog, and drop live lines
      whose ``seq`` the backlog already had; if ``ended`` is set, the run is over.
    - ``finish`` marks the run ended (``ended`` returns the status), pushes ``LogEnd`` and
      starts the retention TTL: lines stay readable for ``ttl`` seconds, then ``read``
      returns ``[]``, ``length`` 0 and ``ended`` None. Lines appended before ``finish`` are
      untouched by it.
    - Lines are text; characters UTF-8 cannot encode (lone surrogates) become ``?``.
    - Live messages on the wire are JSON: ``{"seq": n, "line": "..."}`` and
      ``{"end": "<status>"}`` (see ``encode_live_line``), so other readers (the API's SSE
      stream) can decode them.
    """

    def append(self, execution_id: int, lines: Sequence[str]) -> int:
        """Append ``lines`` in order (one round trip), push them live; the new length."""
        ...

    def read(self, execution_id: int, start: int = 0) -> builtins.list[LogLine]:
        """The stored lines from ``seq`` ``start`` on."""
        ...

    def length(self, execution_id: int) -> int:
        """How many lines are stored."""
        ...

    def finish(self, execution_id: int, status: str, *, ttl: float) -> None:
        """Mark the run ended with ``status``, push ``LogEnd``, keep lines ``ttl`` seconds."""
        ...

    def ended(self, execution_id: int) -> str | None:
        """The final status given to ``finish``, until the retention TTL runs out."""
        ...

    def subscribe(self, execution_id: int) -> LogSubscription:
        """A live subscription, active when this returns."""
        ...

    def delete(self, execution_id: int) -> None:
        """Drop the lines and the end marker."""
        ...


def writable_line(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) replaced by ``?``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def encode_live_line(line: LogLine) -> str:
    """The wire form of a live line: ``{"seq": n, "line": "..."}``."""
    return json.dumps({"seq": line.seq, "line": line.text}, ensure_ascii=False)


def encode_live_end(end: LogEnd) -> str:
    """The wire form of the end event: ``{"end": "<status>"}``."""
    return json.dumps({"end": end.status}, ensure_ascii=False)


def decode_live_message(data: str | bytes) -> LogLine | LogEnd | None:
    """Parse a live message; None when it is not one of the two shapes."""
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    end = payload.get("end")
    if isinstance(end, str):
        return LogEnd(status=end)
    seq, text = payload.get("seq"), payload.get("line")
    if isinstance(seq, int) and not isinstance(seq, bool) and isinstance(text, str):
        return LogLine(seq=seq, text=text)
    return None


# ---------------------------------------------------------------- change notices


class NoticeListener(Protocol):
    """One listener's view of the change notices."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if any notice arrived since the last wait.

        Every pending notice is consumed, so a burst of changes wakes the waiter once.
        """
        ...

    def close(self) -> None:
        """Stop listening; idempotent. ``wait`` after close returns False at once."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ChangeNotices(Protocol):
    """Notices that a schedule changed, which wake the beat scheduler early.

    Invariants: a notice published after ``listen`` returned reaches that listener; notices
    are hints, not a queue (no payload is promised, several collapse into one wake-up, and
    none is kept for listeners that were not listening). The scheduler still re-reads the
    database on its own timer, so a lost notice only delays a change.
    """

    def publish(self, schedule_id: int | None = None) -> None:
        """Tell every listener that ``schedule_id`` (or some schedule) changed."""
        ...

    def listen(self) -> NoticeListener:
        """A listener, active when this returns."""
        ...
