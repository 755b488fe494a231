"""Every Redis key and channel name the library uses, and what the channels carry,
built in one place.

Pure string building (no redis-py import), so every room that names a lock (the Celery
face, the API, the reaper, the pytest plugin) asks this module, and the in-process twins
get the same names by injection. A lock *scope* says what a lock guards: one schedule
(``task:<scheduled_task_id>``) or every run of a task name (``name:<celery task name>``);
a run takes its schedule's scope, or its task name's when it has none (``run_scope``).
A run's log and state are named by its Celery task id (``<run>`` below), which the worker
knows without asking the database.

Key layout, for operators (``<prefix>`` is ``Settings.key_prefix``):

- ``<prefix>:lock:<scope>`` (hash, the lock TTL, extended while the task runs): the
  lock. Fields ``token`` (random, proves ownership), ``celery_task_id`` (the holder; a
  retry of the same task re-enters), ``execution_id``, ``hostname``, ``pid`` and
  ``acquired_at`` (ISO 8601, UTC); an empty string means unknown. Written by the worker
  (take, extend, release), its main process and the reaper (release by task id) and the
  API (force release).
- ``<prefix>:locks`` (sorted set, no TTL): the keys of the held locks, each scored by
  the Unix time in milliseconds when it expires; kept by the same scripts that take,
  extend and release a lock, and pruned by ``list()``. Listing the locks reads this, not
  the keyspace.
- ``<prefix>:log:<run>`` (list, no TTL while the run is live, the log retention after it
  ends): one element per ``task_log`` line, in order; the index is the line's ``seq``.
- ``<prefix>:log:<run>:end`` (string, the log retention): the run's final status.
- ``<prefix>:run:<run>`` (hash, ``celery_broker_visibility_timeout`` plus
  ``lost_run_grace_seconds`` after its last step): what the run knows of itself, so a
  duplicate delivery is recognised without the database. Fields ``state`` (``running``,
  ``retrying``, ``done``), ``attempt``, ``undrained`` (its records not yet in the
  database: the reaper leaves such a run alone).
- ``<prefix>:outbox`` (stream, no TTL): run history on its way to the database, one
  entry per start or end (field ``r``, a JSON record), read by the consumer group
  ``history`` (one consumer per history writer) and deleted once applied. Its length and
  the age of its first entry say how far behind the writers are.
- ``<prefix>:outbox:dead`` (stream, no TTL): records the database refused for good, with
  the reason (field ``why``); kept for an operator.

Pub/sub channels (not keys: they hold nothing and never show in SCAN):

- ``<prefix>:log:<run>:live``: JSON ``{"seq": n, "line": "..."}`` per appended line,
  then ``{"end": "<status>"}`` once.
- ``<prefix>:schedules:changed``: JSON ``{"schedule_id": n | null}`` per change made
  through the API; wakes the beat scheduler.

Live messages are written by the Lua functions in ``redis.logbus`` (``cjson``) and read
by ``decode_live_message`` here; the log-bus contract tests decode what they publish.
Brokers and result backends a demo or test runs on Redis are namespaced under
``<prefix>:<name>:`` (``Keys.namespace``). On Redis Cluster, put the prefix in braces
(``{dataforge}``) so every key of one run is in one slot, as its scripts need.

To see the held locks: ``ZRANGE <prefix>:locks 0 -1 WITHSCORES``, then ``HGETALL`` and
``PTTL`` on each (a member whose hash is gone is stale: ``list()`` drops it). Deleting a
lock key by hand force-releases it; the running task notices at its next
``extend_lock()`` (``LockLost``). To see the history backlog:
``XLEN <prefix>:outbox`` and ``XPENDING <prefix>:outbox history``.
"""

from __future__ import annotations

import json

from dataforge_scheduler.core.naming import check_key_prefix, check_run_id
from dataforge_scheduler.core.values import LogEnd, LogLine
from dataforge_scheduler.errors import ConfigurationError

__all__ = [
    "Keys",
    "decode_live_message",
    "run_scope",
    "schedule_id_of_scope",
    "schedule_scope",
    "task_name_scope",
]


# ---------------------------------------------------------------- lock scopes


def schedule_scope(scheduled_task_id: int) -> str:
    """The lock scope of one schedule row: ``task:<id>``."""
    return f"task:{int(scheduled_task_id)}"


def task_name_scope(task_name: str) -> str:
    """The lock scope shared by every run of a Celery task name: ``name:<task_name>``."""
    if not task_name:
        raise ConfigurationError("task_name must be non-empty for a lock scope", field="task_name")
    return f"name:{task_name}"


def run_scope(task_name: str, scheduled_task_id: int | None) -> str:
    """The lock scope of a run: its schedule's, or its task name's when it has none."""
    if scheduled_task_id is not None:
        return schedule_scope(scheduled_task_id)
    return task_name_scope(task_name)


def schedule_id_of_scope(scope: str) -> int | None:
    """The schedule id a ``task:<id>`` scope names; None for any other scope."""
    prefix, _, rest = scope.partition(":")
    return int(rest) if prefix == "task" and rest.isascii() and rest.isdigit() else None


# ---------------------------------------------------------------- keys


class Keys:
    """Builds every key and channel name under one validated prefix."""

    __slots__ = ("_prefix",)

    def __init__(self, prefix: str) -> None:
        self._prefix = check_key_prefix(prefix)

    @property
    def prefix(self) -> str:
        return self._prefix

    def __repr__(self) -> str:
        return f"Keys({self._prefix!r})"

    def all_pattern(self) -> str:
        """SCAN pattern matching every key under the prefix."""
        return f"{self._prefix}:*"

    def namespace(self, name: str) -> str:
        """The prefix (ending in ``:``) of keys a component named ``name`` writes on its
        own (a demo's broker and result backend, as kombu's ``global_keyprefix``)."""
        if not name or ":" in name:
            raise ConfigurationError(f"namespace name {name!r} is invalid", field="name")
        return f"{self._prefix}:{name}:"

    # ---- locks

    def lock(self, scope: str) -> str:
        """The hash holding the lock of ``scope``."""
        if not scope:
            raise ConfigurationError("lock scope must be non-empty", field="scope")
        return f"{self._prefix}:lock:{scope}"

    def lock_pattern(self) -> str:
        """SCAN pattern matching every lock key."""
        return f"{self._prefix}:lock:*"

    def lock_index(self) -> str:
        """The sorted set of held lock keys, scored by when each expires (ms)."""
        return f"{self._prefix}:locks"

    def lock_keys(self, scope: str) -> list[str]:
        """The keys every lock script takes: the lock of ``scope``, then the index."""
        return [self.lock(scope), self.lock_index()]

    def scope_of(self, lock_key: str) -> str:
        """The scope a lock key was built from (inverse of ``lock``)."""
        head = f"{self._prefix}:lock:"
        if not lock_key.startswith(head) or len(lock_key) == len(head):
            raise ConfigurationError(f"{lock_key!r} is not a lock key", field="lock_key")
        return lock_key[len(head) :]

    # ---- logs

    def log(self, run_id: str) -> str:
        """The list of a run's log lines (``run_id``: its Celery task id)."""
        return f"{self._prefix}:log:{_run(run_id)}"

    def log_channel(self, run_id: str) -> str:
        """The pub/sub channel of a run's live log."""
        return f"{self._prefix}:log:{_run(run_id)}:live"

    def log_end(self, run_id: str) -> str:
        """The string holding a finished run's final status."""
        return f"{self._prefix}:log:{_run(run_id)}:end"

    # ---- run history

    def run(self, run_id: str) -> str:
        """The hash of what a run knows of itself (state, attempt, undrained records)."""
        return f"{self._prefix}:run:{_run(run_id)}"

    def outbox(self) -> str:
        """The stream of run history on its way to the database."""
        return f"{self._prefix}:outbox"

    def outbox_dead(self) -> str:
        """The stream of records the database refused for good."""
        return f"{self._prefix}:outbox:dead"

    def cancel(self, run_id: str) -> str:
        """The string holding why a run was cancelled, until its worker records it."""
        return f"{self._prefix}:cancel:{_run(run_id)}"

    # ---- schedule changes

    def schedule_changes_channel(self) -> str:
        """The pub/sub channel of "a schedule changed" notices."""
        return f"{self._prefix}:schedules:changed"


def _run(run_id: str) -> str:
    return check_run_id(run_id)


# ---------------------------------------------------------------- live messages


def decode_live_message(data: str | bytes) -> LogLine | LogEnd | None:
    """Parse a live message; None when it is not one of the two shapes."""
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    end = payload.get("end")
    if isinstance(end, str):
        return LogEnd(status=end)
    seq, text = payload.get("seq"), payload.get("line")
    if isinstance(seq, int) and not isinstance(seq, bool) and isinstance(text, str):
        return LogLine(seq=seq, text=text)
    return None
