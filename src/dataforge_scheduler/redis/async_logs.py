"""``RedisAsyncLogFeed``: a run's live log lines over redis.asyncio, for the API's SSE stream.

The sync ``RedisLogBus`` subscription blocks a thread per reader; an SSE stream may stay
open for the whole run, so the API reads the same pub/sub channel with redis.asyncio
instead and holds no thread while it waits. Each subscription owns its own client (one
connection, made on the event loop that uses it) and closes both when the stream ends,
so a client that disconnects leaves nothing subscribed. Messages are the JSON shapes of
``redis.keys`` (``decode_live_message``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, Self

import redis.asyncio
import redis.exceptions

from dataforge_scheduler.core.values import LogEnd, LogLine
from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.redis.keys import Keys, decode_live_message

__all__ = ["RedisAsyncLogFeed", "RedisAsyncLogSubscription"]

logger = logging.getLogger(__name__)

_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class RedisAsyncLogFeed:
    """Opens async subscriptions to runs' live log channels."""

    def __init__(self, url: str, keys: Keys, *, subscribe_timeout: float = 5.0) -> None:
        self._url = url
        self._keys = keys
        self._subscribe_timeout = subscribe_timeout

    async def subscribe(self, run_id: str) -> RedisAsyncLogSubscription:
        """A subscription to ``run_id``'s log, active (confirmed) when this returns."""
        channel = self._keys.log_channel(run_id)
        client: Any = redis.asyncio.Redis.from_url(self._url, socket_connect_timeout=5)
        pubsub: Any = client.pubsub()
        subscription = RedisAsyncLogSubscription(client, pubsub, channel)
        try:
            await pubsub.subscribe(channel)
            deadline = time.monotonic() + self._subscribe_timeout
            while (remaining := deadline - time.monotonic()) > 0:
                message = await pubsub.get_message(timeout=remaining)
                if message is not None and message.get("type") == "subscribe":
                    return subscription
        except _REDIS_ERRORS as exc:
            await subscription.close()
            raise BackendUnavailable(
                f"Redis is unavailable while subscribing to {channel}: {exc}"
            ) from exc
        except BaseException:
            await subscription.close()
            raise
        await subscription.close()
        raise BackendUnavailable(
            f"Redis did not confirm the subscription to {channel} in {self._subscribe_timeout} s"
        )


class RedisAsyncLogSubscription:
    """One live subscription; ``get`` waits without holding a thread."""

    def __init__(self, client: Any, pubsub: Any, channel: str) -> None:
        self._client = client
        self._pubsub = pubsub
        self._channel = channel
        self._closed = False

    async def get(self, wait: float) -> LogLine | LogEnd | None:
        """The next line or end event, waiting up to ``wait`` seconds; None if none came."""
        if self._closed:
            return None
        deadline = time.monotonic() + max(0.0, wait)
        try:
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
                if message is not None and message.get("type") == "message":
                    event = decode_live_message(message["data"])
                    if event is not None:
                        return event
                    logger.warning("ignored a malformed message on %s", self._channel)
                if remaining <= 0:
                    return None
        except _REDIS_ERRORS as exc:
            raise BackendUnavailable(
                f"Redis is unavailable while reading {self._channel}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Unsubscribe and close the connection; idempotent, never raises for Redis errors."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._pubsub.aclose()
            await self._client.aclose()
        except (*_REDIS_ERRORS, asyncio.CancelledError, RuntimeError) as exc:
            # the client went away mid-stream; its socket is gone with it
            logger.debug("closing the subscription to %s: %s", self._channel, exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
