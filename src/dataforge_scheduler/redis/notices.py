"""``RedisChangeNotices``: "a schedule changed" notices on one Redis pub/sub channel.

The API publishes after it commits a change; every beat scheduler listens and re-reads
the database at once instead of at its next timer. A notice carries the schedule id as
JSON for log lines and debugging; listeners only need to know that something changed.
"""

from __future__ import annotations

import json
import logging
import time
from types import TracebackType
from typing import Self

import redis
import redis.client

from dataforge_scheduler.redis.connection import backend_errors, open_pubsub
from dataforge_scheduler.redis.keys import Keys

__all__ = ["RedisChangeNotices", "RedisNoticeListener"]

logger = logging.getLogger(__name__)


class RedisChangeNotices:
    """The ``ChangeNotices`` port on Redis pub/sub (see the Protocol for the invariants)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    def publish(self, schedule_id: int | None = None) -> None:
        channel = self._keys.schedule_changes_channel()
        with backend_errors("publishing a schedule change"):
            receivers = self._client.publish(channel, json.dumps({"schedule_id": schedule_id}))
        logger.debug("schedule change %s reached %s listeners", schedule_id, receivers)

    def listen(self) -> RedisNoticeListener:
        channel = self._keys.schedule_changes_channel()
        return RedisNoticeListener(open_pubsub(self._client, channel), channel)


class RedisNoticeListener:
    """One subscriber to the schedule-change channel (a ``NoticeListener``)."""

    def __init__(self, pubsub: redis.client.PubSub, channel: str) -> None:
        self._pubsub = pubsub
        self._channel = channel
        self._closed = False

    def wait(self, timeout: float) -> bool:
        if self._closed:
            return False
        deadline = time.monotonic() + max(0.0, timeout)
        with backend_errors(f"waiting on {self._channel}"):
            while not self._next(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return False
            while self._next(0.0):  # a burst of changes is one wake-up
                pass
        return True

    def _next(self, timeout: float) -> bool:
        message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        return message is not None and message.get("type") == "message"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pubsub.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
