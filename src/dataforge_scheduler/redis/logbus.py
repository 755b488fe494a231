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
from dataforge_scheduler.redis.keys import Keys, decode_live_message

__all__ = ["LOG_FUNCTIONS", "RedisLogBus", "RedisLogSubscription"]

logger = logging.getLogger(__name__)

# The log operations as Lua functions, shared with the run journal's finish script
# (redis.journal). append_lines pushes ``lines`` (a table) and publishes each with its
# ``seq``, computed from the list's new length so concurrent appenders stay exact; RPUSH
# goes in chunks because Lua's unpack() is bounded by the C stack (~8000 values).
# end_log marks the run ended, starts the retention TTL and publishes the end event.
LOG_FUNCTIONS = """
local function append_lines(key, channel, lines)
  local count = #lines
  local length = 0
  for first = 1, count, 1000 do
    length = redis.call('RPUSH', key, unpack(lines, first, math.min(first + 999, count)))
  end
  local seq = length - count
  for i = 1, count do
    redis.call('PUBLISH', channel, cjson.encode({seq = seq, line = lines[i]}))
    seq = seq + 1
  end
  return length
end
local function end_log(key, end_key, channel, status, ttl_ms)
  redis.call('SET', end_key, status, 'PX', ttl_ms)
  redis.call('PEXPIRE', key, ttl_ms)
  redis.call('PUBLISH', channel, cjson.encode({['end'] = status}))
end
"""

# KEYS[1] log list; ARGV[1] live channel, ARGV[2..] the lines. Returns the new length.
_APPEND = (
    LOG_FUNCTIONS
    + """
local lines = {}
for i = 2, #ARGV do lines[i - 1] = ARGV[i] end
return append_lines(KEYS[1], ARGV[1], lines)
"""
)

# KEYS[1] log list, KEYS[2] end marker; ARGV[1] live channel, ARGV[2] status, ARGV[3] ttl ms.
_FINISH = (
    LOG_FUNCTIONS
    + """
end_log(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)


class RedisLogBus:
    """The ``LogBus`` port on Redis (see the Protocol for the invariants)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._append = client.register_script(_APPEND)
        self._finish = client.register_script(_FINISH)

    def append(self, run_id: str, lines: Sequence[str]) -> int:
        if isinstance(lines, str):
            raise TypeError("append() takes a sequence of lines, not one str")
        if not lines:
            return self.length(run_id)
        args = [self._keys.log_channel(run_id), *(writable_line(line) for line in lines)]
        with backend_errors(f"appending to the log of run {run_id}"):
            return int(self._append(keys=[self._keys.log(run_id)], args=args))

    def read(self, run_id: str, start: int = 0) -> builtins.list[LogLine]:
        if start < 0:
            raise ConfigurationError(f"start must be >= 0, got {start}", field="start")
        with backend_errors(f"reading the log of run {run_id}"):
            raw = self._client.lrange(self._keys.log(run_id), start, -1)
        return [LogLine(seq=start + index, text=_text(item)) for index, item in enumerate(raw)]

    def length(self, run_id: str) -> int:
        with backend_errors(f"reading the log length of run {run_id}"):
            return int(self._client.llen(self._keys.log(run_id)))

    def finish(self, run_id: str, status: str, *, ttl: float) -> None:
        # One script: a reader that subscribed before it gets the end event, and one that
        # checks ended() after it sees the marker; nobody falls between the two.
        keys = [self._keys.log(run_id), self._keys.log_end(run_id)]
        args: list[str | int] = [self._keys.log_channel(run_id), status, ttl_milliseconds(ttl)]
        with backend_errors(f"finishing the log of run {run_id}"):
            self._finish(keys=keys, args=args)

    def ended(self, run_id: str) -> str | None:
        with backend_errors(f"reading the end of run {run_id}"):
            value = self._client.get(self._keys.log_end(run_id))
        return None if value is None else _text(value)

    def subscribe(self, run_id: str) -> RedisLogSubscription:
        channel = self._keys.log_channel(run_id)
        return RedisLogSubscription(open_pubsub(self._client, channel), channel)

    def delete(self, run_id: str) -> None:
        with backend_errors(f"deleting the log of run {run_id}"):
            self._client.delete(self._keys.log(run_id), self._keys.log_end(run_id))


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
