"""Every Redis key and channel name the library uses, and what the channels carry,
built in one place.

Pure string building (no redis-py import), so every room that names a lock (the Celery
face, the API, the reaper, the pytest plugin) asks this module, and the in-process twins
get the same names by injection. A lock *scope* says what a lock guards: one schedule
(``task:<scheduled_task_id>``) or every run of a task name (``name:<celery task name>``);
a run takes its schedule's scope, or its task name's when it has none (``run_scope``).

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

Live messages are built by ``encode_live_line``/``encode_live_end`` and read by
``decode_live_message`` (the append script in ``redis.logbus`` writes the same line shape
with ``cjson``; the log-bus contract tests decode what it publishes). Brokers and result
backends a demo or test runs on Redis are namespaced under ``<prefix>:<name>:``
(``Keys.namespace``).

To see the held locks: ``redis-cli --scan --pattern '<prefix>:lock:*'``, then ``HGETALL``
and ``PTTL`` on each. Deleting a lock key by hand force-releases it; the running task
notices at its next ``extend_lock()`` (``LockLost``).
"""

from __future__ import annotations

import json

from dataforge_scheduler.core.naming import check_key_prefix
from dataforge_scheduler.core.values import LogEnd, LogLine
from dataforge_scheduler.errors import ConfigurationError

__all__ = [
    "Keys",
    "decode_live_message",
    "encode_live_end",
    "encode_live_line",
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


# ---------------------------------------------------------------- live messages


def encode_live_line(line: LogLine) -> str:
    """The wire form of a live line: ``{"seq": n, "line": "..."}``."""
    return json.dumps({"seq": line.seq, "line": line.text}, ensure_ascii=False)


def encode_live_end(end: LogEnd) -> str:
    """The wire form of the end event: ``{"end": "<status>"}``."""
    return json.dumps({"end": end.status}, ensure_ascii=False)


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
