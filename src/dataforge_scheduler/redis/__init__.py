"""The Redis room: the lock, log-bus and change-notice ports on redis-py.

Only this room imports redis-py. Every key name comes from ``keys.Keys`` (the layout
table for operators is in that module's docstring); every mutation that must be atomic
is one Lua script.
"""

from __future__ import annotations

from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.redis.locks import RedisLockManager
from dataforge_scheduler.redis.logbus import RedisLogBus, RedisLogSubscription
from dataforge_scheduler.redis.notices import RedisChangeNotices, RedisNoticeListener

__all__ = [
    "Keys",
    "RedisChangeNotices",
    "RedisLockManager",
    "RedisLogBus",
    "RedisLogSubscription",
    "RedisNoticeListener",
]
