"""``RedisBackend``: every Redis-backed role of one ``redis_url``, made on first use.

One redis-py client (its connection pool resets itself in a forked child, so a prefork
pool process never shares its parent's sockets) serves the lock manager, the log bus and
the change notices; the API's async live-log feed opens its own connections on the event
loop that reads them. Nothing connects at construction.
"""

from __future__ import annotations

import logging
import threading

import redis

from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.redis.async_logs import RedisAsyncLogFeed
from dataforge_scheduler.redis.cancels import RedisCancelNotes
from dataforge_scheduler.redis.connection import backend_errors
from dataforge_scheduler.redis.journal import RedisRunJournal
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.redis.locks import RedisLockManager
from dataforge_scheduler.redis.logbus import RedisLogBus
from dataforge_scheduler.redis.notices import RedisChangeNotices

__all__ = ["RedisBackend"]

logger = logging.getLogger(__name__)

_PURGE_BATCH = 500


class RedisBackend:
    """The ``Backend`` port on Redis (see the Protocol)."""

    name = "redis"

    def __init__(self, url: str, *, keys: Keys, clock: Clock) -> None:
        self.url = url
        self.keys = keys
        self._clock = clock
        self._mutex = threading.RLock()
        self._client: redis.Redis | None = None
        self._locks: RedisLockManager | None = None
        self._logbus: RedisLogBus | None = None
        self._notices: RedisChangeNotices | None = None
        self._log_feed: RedisAsyncLogFeed | None = None
        self._journal: RedisRunJournal | None = None
        self._cancels: RedisCancelNotes | None = None

    def __repr__(self) -> str:
        return f"<RedisBackend {self.keys!r}>"

    @property
    def client(self) -> redis.Redis:
        """The redis-py client the roles share (made on first use)."""
        with self._mutex:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self.url, health_check_interval=30, socket_connect_timeout=5
                )
            return self._client

    @property
    def locks(self) -> RedisLockManager:
        with self._mutex:
            if self._locks is None:
                self._locks = RedisLockManager(self.client, self.keys, clock=self._clock)
            return self._locks

    @property
    def logbus(self) -> RedisLogBus:
        with self._mutex:
            if self._logbus is None:
                self._logbus = RedisLogBus(self.client, self.keys)
            return self._logbus

    @property
    def notices(self) -> RedisChangeNotices:
        with self._mutex:
            if self._notices is None:
                self._notices = RedisChangeNotices(self.client, self.keys)
            return self._notices

    @property
    def log_feed(self) -> RedisAsyncLogFeed:
        with self._mutex:
            if self._log_feed is None:
                self._log_feed = RedisAsyncLogFeed(self.url, self.keys)
            return self._log_feed

    @property
    def journal(self) -> RedisRunJournal:
        with self._mutex:
            if self._journal is None:
                self._journal = RedisRunJournal(self.client, self.keys, clock=self._clock)
            return self._journal

    @property
    def cancels(self) -> RedisCancelNotes:
        with self._mutex:
            if self._cancels is None:
                self._cancels = RedisCancelNotes(self.client, self.keys)
            return self._cancels

    def check(self) -> str:
        try:
            with backend_errors("answering a ping"):
                self.client.ping()
        except redis.exceptions.RedisError as exc:  # auth, protocol: not a connection error
            raise BackendUnavailable(f"Redis refused a ping: {exc}") from exc
        return "ok"

    def purge(self) -> int:
        deleted = 0
        with backend_errors("deleting the library's keys"):
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=self.keys.all_pattern(), count=_PURGE_BATCH):
                batch.append(key)
                if len(batch) >= _PURGE_BATCH:
                    deleted += int(self.client.delete(*batch))
                    batch = []
            if batch:
                deleted += int(self.client.delete(*batch))
        return deleted

    def close(self) -> None:
        with self._mutex:
            client, self._client = self._client, None
            self._locks = self._logbus = self._notices = None
            self._journal = None
            self._cancels = None
        if client is not None:
            client.close()
