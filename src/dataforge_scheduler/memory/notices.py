"""``MemoryChangeNotices``: "a schedule changed" notices between threads of one process.

Each listener is a flag under a ``threading.Condition``; ``publish`` raises every
listener's flag and wakes its waiter, ``wait`` consumes the flag. Like Redis pub/sub,
a notice reaches only the listeners that exist when it is published.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["MemoryChangeNotices", "MemoryNoticeListener"]


class MemoryChangeNotices:
    """The ``ChangeNotices`` port in memory (see the Protocol for the invariants)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._listeners: set[MemoryNoticeListener] = set()

    def publish(self, schedule_id: int | None = None) -> None:
        with self._mutex:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.notify()

    def listen(self) -> MemoryNoticeListener:
        listener = MemoryNoticeListener(self._discard)
        with self._mutex:
            self._listeners.add(listener)
        return listener

    def _discard(self, listener: MemoryNoticeListener) -> None:
        with self._mutex:
            self._listeners.discard(listener)


class MemoryNoticeListener:
    """One listener of a ``MemoryChangeNotices`` (a ``NoticeListener``)."""

    def __init__(self, discard: Callable[[MemoryNoticeListener], None]) -> None:
        self._discard = discard
        self._condition = threading.Condition()
        self._pending = False
        self._closed = False

    def notify(self) -> None:
        """Raise the flag and wake the waiter (called by ``publish``)."""
        with self._condition:
            self._pending = True
            self._condition.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._condition:
            if self._closed:
                return False
            self._condition.wait_for(lambda: self._pending or self._closed, max(0.0, timeout))
            woke = self._pending and not self._closed
            self._pending = False
            return woke

    def close(self) -> None:
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._condition.notify_all()
        self._discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
