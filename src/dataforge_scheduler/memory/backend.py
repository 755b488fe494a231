"""``MemoryBackend``: the in-process twins of the Redis-backed roles, for one runtime.

For the embedded demo and host-app fixtures (``redis_url = "memory://"``): the roles
live in this process, share the runtime's clock, and name their locks with the same key
builder the Redis roles use (injected, so this room never builds a key itself).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.memory.async_logs import PollingAsyncLogFeed
from dataforge_scheduler.memory.cancels import MemoryCancelNotes
from dataforge_scheduler.memory.journal import MemoryRunJournal
from dataforge_scheduler.memory.locks import MemoryLockManager
from dataforge_scheduler.memory.logbus import MemoryLogBus
from dataforge_scheduler.memory.notices import MemoryChangeNotices

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """The ``Backend`` port in memory (see the Protocol)."""

    name = "memory"

    def __init__(self, *, clock: Clock, lock_key: Callable[[str], str]) -> None:
        self._mutex = threading.Lock()
        self.locks = MemoryLockManager(clock=clock, lock_key=lock_key)
        self.logbus = MemoryLogBus(clock=clock)
        self.notices = MemoryChangeNotices()
        self.log_feed = PollingAsyncLogFeed(self.logbus)
        self.journal = MemoryRunJournal(locks=self.locks, logbus=self.logbus, clock=clock)
        self.cancels = MemoryCancelNotes(clock=clock)

    def __repr__(self) -> str:
        return "<MemoryBackend>"

    def check(self) -> str:
        return "ok (in-process)"

    def purge(self) -> int:
        with self._mutex:
            return (
                self.locks.clear()
                + self.logbus.clear()
                + self.journal.clear()
                + self.cancels.clear()
            )

    def close(self) -> None:
        """Nothing to release: the roles die with the runtime."""
