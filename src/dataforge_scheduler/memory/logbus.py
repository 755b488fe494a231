"""``MemoryLogBus``: the ``LogBus`` port in one process, for the demo and fixtures.

Runs' lines live in lists behind one ``threading.Lock``; an append numbers its lines and
hands them to every subscriber's queue inside the same critical section, so seq numbers
and live order are exact under concurrent appenders, as with the Redis Lua script. The
retention TTL follows the injected clock; expired logs vanish when next looked at.
"""

from __future__ import annotations

import builtins
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from dataforge_scheduler.core.clock import Clock, SystemClock
from dataforge_scheduler.core.naming import check_run_id
from dataforge_scheduler.core.values import LogEnd, LogLine, ttl_milliseconds, writable_line
from dataforge_scheduler.errors import ConfigurationError

__all__ = ["MemoryLogBus", "MemoryLogSubscription"]


@dataclass
class _Log:
    lines: builtins.list[str] = field(default_factory=builtins.list)
    expires_at: datetime | None = None


@dataclass(frozen=True)
class _End:
    status: str
    expires_at: datetime


class MemoryLogBus:
    """The ``LogBus`` port in memory (see the Protocol for the invariants)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._mutex = threading.Lock()
        self._logs: dict[str, _Log] = {}
        self._ends: dict[str, _End] = {}
        self._subscribers: dict[str, set[MemoryLogSubscription]] = {}

    def clear(self) -> int:
        """Drop every log and end marker (test clean-up); how many logs there were."""
        with self._mutex:
            count = len(self._logs)
            self._logs.clear()
            self._ends.clear()
        return count

    def append(self, run_id: str, lines: Sequence[str]) -> int:
        check_run_id(run_id)
        if isinstance(lines, str):
            raise TypeError("append() takes a sequence of lines, not one str")
        texts = [writable_line(line) for line in lines]
        with self._mutex:
            log = self._log(run_id, self._clock.now())
            if not texts:
                return 0 if log is None else len(log.lines)
            if log is None:
                log = self._logs[run_id] = _Log()
            first = len(log.lines)
            log.lines.extend(texts)
            for subscription in self._subscribers.get(run_id, ()):
                for offset, text in enumerate(texts):
                    subscription.push(LogLine(seq=first + offset, text=text))
            return len(log.lines)

    def read(self, run_id: str, start: int = 0) -> builtins.list[LogLine]:
        check_run_id(run_id)
        if start < 0:
            raise ConfigurationError(f"start must be >= 0, got {start}", field="start")
        with self._mutex:
            log = self._log(run_id, self._clock.now())
            lines = [] if log is None else log.lines[start:]
        return [LogLine(seq=start + index, text=text) for index, text in enumerate(lines)]

    def length(self, run_id: str) -> int:
        check_run_id(run_id)
        with self._mutex:
            log = self._log(run_id, self._clock.now())
            return 0 if log is None else len(log.lines)

    def finish(self, run_id: str, status: str, *, ttl: float) -> None:
        check_run_id(run_id)
        lifetime = timedelta(milliseconds=ttl_milliseconds(ttl))
        with self._mutex:
            now = self._clock.now()
            self._ends[run_id] = _End(status, now + lifetime)
            log = self._log(run_id, now)
            if log is not None:
                log.expires_at = now + lifetime
            for subscription in self._subscribers.get(run_id, ()):
                subscription.push(LogEnd(status))

    def ended(self, run_id: str) -> str | None:
        check_run_id(run_id)
        with self._mutex:
            end = self._ends.get(run_id)
            if end is not None and end.expires_at <= self._clock.now():
                del self._ends[run_id]
                return None
            return None if end is None else end.status

    def subscribe(self, run_id: str) -> MemoryLogSubscription:
        check_run_id(run_id)

        def unsubscribe(subscription: MemoryLogSubscription) -> None:
            with self._mutex:
                group = self._subscribers.get(run_id)
                if group is not None:
                    group.discard(subscription)
                    if not group:
                        del self._subscribers[run_id]

        subscription = MemoryLogSubscription(unsubscribe)
        with self._mutex:
            self._subscribers.setdefault(run_id, set()).add(subscription)
        return subscription

    def delete(self, run_id: str) -> None:
        check_run_id(run_id)
        with self._mutex:
            self._logs.pop(run_id, None)
            self._ends.pop(run_id, None)

    def _log(self, run_id: str, now: datetime) -> _Log | None:
        """The unexpired log of a run; drops an expired one. Call under the mutex."""
        log = self._logs.get(run_id)
        if log is not None and log.expires_at is not None and log.expires_at <= now:
            del self._logs[run_id]
            return None
        return log


class MemoryLogSubscription:
    """A live subscription to one run's log in a ``MemoryLogBus`` (a ``LogSubscription``)."""

    def __init__(self, unsubscribe: Callable[[MemoryLogSubscription], None]) -> None:
        self._queue: queue.SimpleQueue[LogLine | LogEnd] = queue.SimpleQueue()
        self._unsubscribe = unsubscribe
        self._closed = False

    def push(self, event: LogLine | LogEnd) -> None:
        """Deliver one event (called by the bus, under its mutex)."""
        self._queue.put(event)

    def get(self, timeout: float) -> LogLine | LogEnd | None:
        if self._closed:
            return None
        try:
            if timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
