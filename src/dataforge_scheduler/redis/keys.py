"""Every Redis key and channel name the library uses, built in one place.

Also home of the two helpers every module of the room shares (each imports this one):
``backend_errors()``, the one translation of redis-py connection failures into
``BackendUnavailable``, and ``open_pubsub()``, a subscription confirmed by the server.

Key layout, for operators (``<prefix>`` is ``Settings.key_prefix``; ``<scope>`` is
``task:<scheduled_task_id>`` or ``name:<celery task name>``):

===================================  ======  ====================  ============================
key                                  type    TTL                   written by
===================================  ======  ====================  ============================
``<prefix>:lock:<scope>``            hash    the lock TTL; the     worker (acquire, extend,
                                             running task extends  release); worker main process
                                             it                    and reaper (release by task
                                                                   id); API (force release)
``<prefix>:log:<execution_id>``      list    none while the run    worker (``task_log``)
                                             is live; log
                                             retention after
                                             ``finish``
``<prefix>:log:<execution_id>:end``  string  log retention         worker, when the run ends
===================================  ======  ====================  ============================

- A lock hash has the fields ``token`` (random, proves ownership), ``celery_task_id`` (the
  holder's identity; a retry of the same task re-enters), ``execution_id``, ``hostname``,
  ``pid`` and ``acquired_at`` (ISO 8601, UTC); an empty string means unknown.
- A log list holds one element per line, in order: the element index is the line's ``seq``.
- An end marker holds the run's final execution status.

Pub/sub channels (not keys: they hold nothing and never show in SCAN):

========================================  =================================================
channel                                   messages
========================================  =================================================
``<prefix>:log:<execution_id>:live``      JSON ``{"seq": n, "line": "..."}`` per appended
                                          line, then ``{"end": "<status>"}`` once
``<prefix>:schedules:changed``            JSON ``{"schedule_id": n | null}`` per change
                                          made through the API; wakes the beat scheduler
========================================  =================================================

To see the held locks: ``redis-cli --scan --pattern '<prefix>:lock:*'``, then ``HGETALL``
and ``PTTL`` on each. Deleting a lock key by hand force-releases it; the running task
notices at its next ``extend_lock()`` (``LockLost``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.client
import redis.exceptions

from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError

__all__ = ["Keys", "backend_errors", "open_pubsub"]

_GLOB_CHARS = frozenset("*?[]\\")


class Keys:
    """Builds every key and channel name under one validated prefix."""

    __slots__ = ("_prefix",)

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"key_prefix must be a non-empty string, got {prefix!r}", field="key_prefix"
            )
        bad = sorted(set(prefix) & _GLOB_CHARS)
        if bad or any(ch.isspace() for ch in prefix):
            raise ConfigurationError(
                f"key_prefix {prefix!r} must not contain whitespace or the glob characters "
                "* ? [ ] \\ (SCAN patterns are built from it)",
                field="key_prefix",
            )
        self._prefix = prefix

    @property
    def prefix(self) -> str:
        return self._prefix

    def __repr__(self) -> str:
        return f"Keys({self._prefix!r})"

    # ---- locks

    def lock(self, scope: str) -> str:
        """The hash holding the lock of ``scope``."""
        if not scope:
            raise ConfigurationError("lock scope must be non-empty", field="scope")
        return f"{self._prefix}:lock:{scope}"

    def lock_pattern(self) -> str:
        """SCAN pattern matching every lock key."""
        return f"{self._prefix}:lock:*"

    def scope_of(self, lock_key: str) -> str:
        """The scope a lock key was built from (inverse of ``lock``)."""
        head = f"{self._prefix}:lock:"
        if not lock_key.startswith(head) or len(lock_key) == len(head):
            raise ConfigurationError(f"{lock_key!r} is not a lock key", field="lock_key")
        return lock_key[len(head) :]

    # ---- logs

    def log(self, execution_id: int) -> str:
        """The list of a run's log lines."""
        return f"{self._prefix}:log:{_execution(execution_id)}"

    def log_channel(self, execution_id: int) -> str:
        """The pub/sub channel of a run's live log."""
        return f"{self._prefix}:log:{_execution(execution_id)}:live"

    def log_end(self, execution_id: int) -> str:
        """The string holding a finished run's final status."""
        return f"{self._prefix}:log:{_execution(execution_id)}:end"

    # ---- schedule changes

    def schedule_changes_channel(self) -> str:
        """The pub/sub channel of "a schedule changed" notices."""
        return f"{self._prefix}:schedules:changed"


def _execution(execution_id: int) -> int:
    if isinstance(execution_id, bool) or not isinstance(execution_id, int):
        raise ConfigurationError(
            f"execution_id must be an int, got {execution_id!r}", field="execution_id"
        )
    return execution_id


@contextmanager
def backend_errors(action: str) -> Iterator[None]:
    """Re-raise redis-py connection and timeout errors as ``BackendUnavailable``."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise BackendUnavailable(f"Redis is unavailable while {action}: {exc}") from exc


def open_pubsub(client: redis.Redis, channel: str, *, timeout: float = 5.0) -> redis.client.PubSub:
    """A PubSub subscribed to ``channel``, returned once the server confirmed it.

    Waiting for the confirmation is what lets the ports promise that a message published
    after ``subscribe()``/``listen()`` returned is received.
    """
    # redis-py leaves Redis.pubsub() unannotated; it returns a PubSub.
    pubsub: redis.client.PubSub = client.pubsub()  # type: ignore[no-untyped-call]
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
    raise BackendUnavailable(f"Redis did not confirm the subscription to {channel} in {timeout} s")
