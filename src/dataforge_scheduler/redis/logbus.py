"""``RedisLogBus``: the ``LogBus`` port on a Redis list (replay) and a pub/sub channel (live).

One Lua script appends a batch and publishes each line with its ``seq`` computed from the
list's new length, so seq numbers are exact even when several processes append to the
same run at once. Live messages are the JSON shapes ``redis.keys`` defines (the script
writes the line shape with ``cjson``), which every live reader decodes with
``decode_live_message``.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import redis
import redis.client

from dataforge_scheduler.core.values import LogEnd, LogLine, ttl_milliseconds, writable_line
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.redis.connection import backend_errors, open_pubsub
from dataforge_scheduler.redis.keys import Keys, decode_live_message, encode_live_end

__all__ = ["RedisLogBus", "RedisLogSubscription"]

logger = logging.getLogger(__name__)

# KEYS[1] log list; ARGV[1] live channel, ARGV[2..] the lines. Returns the new length.
# RPUSH in chunks: Lua's unpack() is bounded by the C stack (~8000 values).
_APPEND = """
local count = #ARGV - 1
local length = 0
for first = 2, #ARGV, 1000 do
  length = redis.call('RPUSH', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
local seq = length - count
for i = 2, #ARGV do
  redis.call('PUBLISH', ARGV[1], cjson.encode({seq = seq, line = ARGV[i]}))
  seq = seq + 1
end
return length
"""


class RedisLogBus:
    """The ``LogBus`` port on Redis (see the Protocol for the invariants)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._append = client.register_script(_APPEND)

    def append(self, execution_id: int, lines: Sequence[str]) -> int:
        if isinstance(lines, str):
            raise TypeError("append() takes a sequence of lines, not one str")
        if not lines:
            return self.length(execution_id)
        args = [self._keys.log_channel(execution_id), *(writable_line(line) for line in lines)]
        with backend_errors(f"appending to the log of execution {execution_id}"):
            return int(self._append(keys=[self._keys.log(execution_id)], args=args))

    def read(self, execution_id: int, start: int = 0) -> builtins.list[LogLine]:
        if start < 0:
            raise ConfigurationError(f"start must be >= 0, got {start}", field="start")
        with backend_errors(f"reading the log of execution {execution_id}"):
            raw = self._client.lrange(self._keys.log(execution_id), start, -1)
        return [LogLine(seq=start + index, text=_text(item)) for index, item in enumerate(raw)]

    def length(self, execution_id: int) -> int:
        with backend_errors(f"reading the log length of execution {execution_id}"):
            return int(self._client.llen(self._keys.log(execution_id)))

    def finish(self, execution_id: int, status: str, *, ttl: float) -> None:
        ttl_ms = ttl_milliseconds(ttl)
        # One MULTI: a reader that subscribed before it gets the end event, and one that
        # checks ended() after it sees the marker; nobody falls between the two.
        with backend_errors(f"finishing the log of execution {execution_id}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._keys.log_end(execution_id), status, px=ttl_ms)
            pipe.pexpire(self._keys.log(execution_id), ttl_ms)
            pipe.publish(self._keys.log_channel(execution_id), encode_live_end(LogEnd(status)))
            pipe.execute()

    def ended(self, execution_id: int) -> str | None:
        with backend_errors(f"reading the end of execution {execution_id}"):
            value = self._client.get(self._keys.log_end(execution_id))
        return None if value is None else _text(value)

    def subscribe(self, execution_id: int) -> RedisLogSubscription:
        channel = self._keys.log_channel(execution_id)
        return RedisLogSubscription(open_pubsub(self._client, channel), channel)

    def delete(self, execution_id: int) -> None:
        with backend_errors(f"deleting the log of execution {execution_id}"):
            self._client.delete(self._keys.log(execution_id), self._keys.log_end(execution_id))


class RedisLogSubscription:
    """A live subscription to one run's log channel (a ``LogSubscription``)."""

    def __init__(self, pubsub: redis.client.PubSub, channel: str) -> None:
        self._pubsub = pubsub
        self._channel = channel
        self._closed = False

    def get(self, timeout: float) -> LogLine | LogEnd | None:
        if self._closed:
            return None
        deadline = time.monotonic() + max(0.0, timeout)
        with backend_errors(f"reading {self._channel}"):
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                message = self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
                if message is not None and message.get("type") == "message":
                    event = decode_live_message(message["data"])
                    if event is not None:
                        return event
                    logger.warning("ignored a malformed message on %s", self._channel)
                if remaining <= 0:
                    return None

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


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
