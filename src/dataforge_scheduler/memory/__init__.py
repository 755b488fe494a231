"""The memory room: in-process twins of the Redis-backed ports.

For the embedded demo and host-app test fixtures. Each class is thread-safe, takes its
time from an injected clock (so tests move TTLs without sleeping) and passes the same
contract suite (``tests/contract``) as its ``redis/`` counterpart.
"""

from __future__ import annotations

from dataforge_scheduler.memory.locks import MemoryLockManager
from dataforge_scheduler.memory.logbus import MemoryLogBus, MemoryLogSubscription
from dataforge_scheduler.memory.notices import MemoryChangeNotices, MemoryNoticeListener

__all__ = [
    "MemoryChangeNotices",
    "MemoryLockManager",
    "MemoryLogBus",
    "MemoryLogSubscription",
    "MemoryNoticeListener",
]
