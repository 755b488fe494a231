"""What every module of the Redis room shares about talking to the server.

``backend_errors()`` is the one translation of redis-py connection failures into
``BackendUnavailable``; ``open_pubsub()`` returns a subscription the server confirmed,
which is what lets the ports promise that a message published after ``subscribe()`` /
``listen()`` returned is received.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.client
import redis.exceptions

from dataforge_scheduler.errors import BackendUnavailable

__all__ = ["backend_errors", "open_pubsub"]


@contextmanager
def backend_errors(action: str) -> Iterator[None]:
    """Re-raise redis-py connection and timeout errors as ``BackendUnavailable``."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise BackendUnavailable(
            f"Redis is unavailable while {action}: {exc}", backend="redis"
        ) from exc


def open_pubsub(client: redis.Redis, channel: str, *, timeout: float = 5.0) -> redis.client.PubSub:
    """A PubSub subscribed to ``channel``, returned once the server confirmed it."""
    # redis-py leaves Redis.pubsub() unannotated; it returns a PubSub.
    pubsub: redis.client.PubSub = client.pubsub()
    try:
        with backend_errors(f"subscribing to {channel}"):
            pubsub.subscribe(channel)
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=remaining)
                if message is not None and message.get("type") == "subscribe":
                    return pubsub
    except BaseException:
        pubsub.close()
        raise
    pubsub.close()
    raise BackendUnavailable(
        f"Redis did not confirm the subscription to {channel} in {timeout} s", backend="redis"
    )
