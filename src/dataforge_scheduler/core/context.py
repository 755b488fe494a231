"""The current run: a ``RunContext`` bound to a ContextVar for the length of one task run.

The Celery face binds a context when a DataForgeTask run starts (``task_prerun``) and
resets it with its token when the run ends (``task_postrun``), in the same thread. A
ContextVar, unlike ``threading.local`` or ``self.request``, follows the run into
``asyncio.run()`` coroutines, their tasks and ``asyncio.to_thread`` threads, and without
the reset it would leak into the next task run on the same thread (docs/internals.md
§7).
A plain ``threading.Thread`` the body starts does not see it unless started inside
``contextvars.copy_context().run``. This module is pure: the log sink and the runtime
are typed by small Protocols and ``object``, so nothing here imports Celery or a backend.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from dataforge_scheduler.core.journal import StartRecord
from dataforge_scheduler.core.values import LockInfo

__all__ = [
    "Background",
    "LockHold",
    "RunContext",
    "RunLog",
    "RunState",
    "bind_run",
    "current_run",
    "reset_run",
]


class RunLog(Protocol):
    """Where a run's ``task_log`` lines go (the Celery face's batching log buffer)."""

    def write(self, lines: list[str]) -> None:
        """Queue ``lines`` for the run's log; must not raise on backend failure."""
        ...

    def flush(self) -> None:
        """Push what is queued now; must not raise on backend failure."""
        ...


class Background(Protocol):
    """Work a run started beside its body (the lock watchdog), stopped when it ends."""

    def stop(self) -> None:
        """Stop; returns at once."""
        ...


@dataclass
class LockHold:
    """The lock a run holds: its scope, ownership token and TTL in seconds.

    ``lost`` turns True when a renewal found the lock gone (expired or force-released);
    ``extend_lock()`` then raises ``LockLost``.
    """

    scope: str
    token: str
    ttl: float
    lost: bool = False


@dataclass
class RunState:
    """What changes during a run: written by the signal handlers and ``before_start``.

    Every field is touched by the thread running the task, except ``lock.lost``, which
    the lock watchdog may set (a single boolean store, read by ``extend_lock``).

    - ``started``: the run's start record, as it went to the outbox (or, Redis down, to
      the database directly: ``journaled`` False); the end reuses it when Redis is down.
    - ``duplicate``: a delivery of an attempt that already started (or of a finished
      run); its body never runs and nothing is recorded.
    - ``lock_scope``: the scope the start tried to lock, noted before the attempt (a lost
      reply may have taken it), so the run's end can free it; ``lock`` is the lock
      actually held; ``holder`` the other run that held it (this run is skipped);
      ``lock_error`` why no lock could be asked for (Redis unreachable).
    - ``skipped_by``: the holder that made this run skip (JSON for the result).
    - ``error``/``traceback``: what ``task_failure``/``task_retry`` reported.
    - ``watchdog``: the thread renewing the lock, stopped when the run ends.
    - ``retry_logged``: ``retry()`` already wrote the "retrying" line to the log.
    - ``done_ttl``: how long the run's own state outlives its applied history once it
      ended (None: as long as the broker may redeliver its message).
    """

    started: StartRecord | None = None
    journaled: bool = False
    duplicate: bool = False
    lock_scope: str | None = None
    lock: LockHold | None = None
    holder: LockInfo | None = None
    lock_error: Exception | None = None
    skipped_by: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    watchdog: Background | None = None
    retry_logged: bool = False
    done_ttl: float | None = None
    token: Token[RunContext | None] | None = None


@dataclass(frozen=True)
class RunContext:
    """One run of a DataForgeTask as the code running it sees it.

    ``execution_id`` is the id of the run's ``task_executions`` row when the message
    said it (the beat and "run now" make the row before they send; a plain ``.delay()``
    gets its row from the history writer); the run's log is named by its Celery task id.
    ``log`` is None when its lines have nowhere to go but the ``logging`` module.
    ``runtime`` is the ``Runtime`` bound to the app; ``schedule_overlap_policy`` the run's
    schedule's ``overlap_policy`` as the message carried it (None: not known).
    ``trigger`` is what started it (an ``ExecutionTrigger`` value) and ``scheduled_for``
    the slot it runs for (a scheduled or backfill slot; None for a manual run): a
    backfill run sees the past slot it stands for here, not the time it runs.
    """

    celery_task_id: str
    task_name: str
    execution_id: int | None
    scheduled_task_id: int | None
    retries: int
    runtime: Any
    log: RunLog | None
    echo: bool
    schedule_overlap_policy: str | None = None
    trigger: str | None = None
    scheduled_for: datetime | None = None
    state: RunState = field(default_factory=RunState)


_CURRENT: ContextVar[RunContext | None] = ContextVar("dataforge_run", default=None)


def current_run() -> RunContext | None:
    """The run this code executes in, or None outside a DataForgeTask run."""
    return _CURRENT.get()


def bind_run(context: RunContext) -> Token[RunContext | None]:
    """Make ``context`` the current run; keep the token to ``reset_run`` it."""
    token = _CURRENT.set(context)
    context.state.token = token
    return token


def reset_run(token: Token[RunContext | None]) -> None:
    """Restore what was current before ``bind_run`` (same thread or task only)."""
    _CURRENT.reset(token)
