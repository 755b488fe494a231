"""A schedule's counters: what one finished run adds to ``run_count``,
``success_count``, ``failure_count``, ``total_runtime_ms`` and the ``last_*`` fields, as
one arithmetic UPDATE (no read-modify-write), built once. Shared by the run statements
(``store.runs``) and the history writer's batches (``store.history``).

Only a run that started counts: ``success``, ``failed`` and ``lost`` rows with a
``started_at``. A real outcome that replaces a ``lost`` verdict first takes back what
the verdict counted. Functions never commit: the caller owns the transaction.

The same UPDATE keeps ``failure_streak``, the failed or lost runs since the last
success (a success resets it; skipped and revoked runs leave it). When a failure was
counted, one more UPDATE pauses the schedule if the streak reached its
``pause_after_failures``, with a note naming the last error: a separate statement, run
only then, because naming ``status`` in the counters UPDATE would wake every beat
(the change trigger fires on the columns an UPDATE names) after every run.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import update
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus, TaskStatus
from dataforge_scheduler.sql.models import ScheduledTask

__all__ = [
    "Streak",
    "counters",
    "last_error",
    "outcome_statement",
    "param",
    "params",
    "pause_on_failures",
    "record_outcome",
    "streak_of",
]

logger = logging.getLogger(__name__)

#: How much of the last error an automatic pause's note quotes.
NOTE_ERROR_CHARS = 300

# a body ran: these count as runs; skipped and revoked ones never started the work
_COUNTED = frozenset({ExecutionStatus.SUCCESS, ExecutionStatus.FAILED, ExecutionStatus.LOST})
_FAILURES = frozenset({ExecutionStatus.FAILED, ExecutionStatus.LOST})

_SCHEDULES_TABLE = cast(sa.Table, ScheduledTask.__table__)
_SCHEDULES = _SCHEDULES_TABLE.c


def param(name: str, column: sa.ColumnElement[Any]) -> sa.BindParameter[Any]:
    # prefixed: a bind parameter may not take a column's name in INSERT or UPDATE
    return sa.bindparam(f"p_{name}", type_=column.type)


def params(**values: Any) -> dict[str, Any]:
    return {f"p_{name}": value for name, value in values.items()}


@dataclass(frozen=True)
class Streak:
    """What outcomes do to ``failure_streak``: reset it first (a success) or not, then
    add ``delta`` (negative to undo a ``lost`` verdict; the column never goes below 0)."""

    reset: bool = False
    delta: int = 0

    def then(self, later: Streak) -> Streak:
        """This, followed by ``later``."""
        if later.reset:
            return later
        return Streak(self.reset, self.delta + later.delta)

    def params(self) -> dict[str, Any]:
        return {"p_streak_reset": self.reset, "p_streak": self.delta}


def streak_of(status: ExecutionStatus, *, started: bool, replaced_lost: bool = False) -> Streak:
    """One outcome's effect on the streak; ``replaced_lost`` takes back the failure a
    ``lost`` verdict counted."""
    counted = started and status in _COUNTED
    if counted and status is ExecutionStatus.SUCCESS:
        return Streak(reset=True)
    return Streak(delta=int(counted and status in _FAILURES) - int(replaced_lost))


@functools.cache
def outcome_statement(*, started: bool) -> Any:
    """The one UPDATE of a schedule's counters: increments (negative to undo a verdict)."""
    added = sa.bindparam("p_streak", type_=sa.Integer)
    streak = sa.case(
        (sa.bindparam("p_streak_reset", type_=sa.Boolean), added),
        else_=_SCHEDULES.failure_streak + added,
    )
    values: dict[str, Any] = {
        "failure_streak": sa.case((streak < 0, 0), else_=streak),
        "last_status": param("last_status", _SCHEDULES.last_status),
        "last_execution_id": param("execution_id", _SCHEDULES.last_execution_id),
        "last_error": param("last_error", _SCHEDULES.last_error),
        "run_count": _SCHEDULES.run_count + sa.bindparam("p_runs", type_=sa.Integer),
        "success_count": _SCHEDULES.success_count + sa.bindparam("p_successes", type_=sa.Integer),
        "failure_count": _SCHEDULES.failure_count + sa.bindparam("p_failures", type_=sa.Integer),
        "total_runtime_ms": _SCHEDULES.total_runtime_ms
        + sa.bindparam("p_runtime", type_=sa.Integer),
    }
    if started:
        values["last_run_at"] = param("last_run_at", _SCHEDULES.last_run_at)
    schedule_id = param("schedule_id", _SCHEDULES.id)
    return update(_SCHEDULES_TABLE).where(_SCHEDULES.id == schedule_id).values(values)


@functools.cache
def _pause_statement() -> Any:
    note = (
        sa.literal("paused after ")
        + sa.cast(_SCHEDULES.pause_after_failures, sa.String)
        + sa.literal(" failed or lost runs in a row; the last, execution ")
        + sa.cast(_SCHEDULES.last_execution_id, sa.String)
        + sa.literal(": ")
        + sa.func.coalesce(
            sa.func.substr(_SCHEDULES.last_error, 1, NOTE_ERROR_CHARS), "no error recorded"
        )
    )
    return (
        update(_SCHEDULES_TABLE)
        .where(
            _SCHEDULES.id == param("schedule_id", _SCHEDULES.id),
            _SCHEDULES.status == TaskStatus.ACTIVE.value,
            _SCHEDULES.pause_after_failures.is_not(None),
            _SCHEDULES.failure_streak >= _SCHEDULES.pause_after_failures,
        )
        .values(
            status=TaskStatus.PAUSED.value,
            next_run_at=None,
            pause_note=note,
            version=_SCHEDULES.version + 1,
            updated_at=param("now", _SCHEDULES.updated_at),
        )
        .returning(_SCHEDULES.id, _SCHEDULES.name, _SCHEDULES.pause_note)
    )


def pause_on_failures(session: Session, schedule_ids: list[int], *, now: datetime) -> list[int]:
    """Pause each of these schedules whose ``failure_streak`` has reached its
    ``pause_after_failures`` (the ones where a failure was just counted); returns the ids
    paused."""
    paused: list[int] = []
    for schedule_id in schedule_ids:
        bound = params(schedule_id=schedule_id, now=now)
        for found, name, note in session.execute(_pause_statement(), bound):
            logger.warning("schedule %s (%s) paused itself: %s", found, name, note)
            paused.append(found)
    return paused


def counters(
    status: ExecutionStatus,
    *,
    started: bool,
    duration_ms: int | None,
    replaced_lost_ms: int | None = None,
) -> tuple[int, int, int, int]:
    """What one outcome adds to a schedule's runs, successes, failures and runtime;
    ``replaced_lost_ms`` undoes a ``lost`` verdict that counted a run, a failure and
    that many milliseconds."""
    counted = started and status in _COUNTED
    runs = int(counted)
    successes = int(counted and status is ExecutionStatus.SUCCESS)
    failures = int(counted and status in _FAILURES)
    runtime = (duration_ms or 0) if counted else 0
    if replaced_lost_ms is not None:
        runs, failures, runtime = runs - 1, failures - 1, runtime - replaced_lost_ms
    return runs, successes, failures, runtime


def last_error(status: ExecutionStatus, error: str | None) -> str | None:
    """What a finished run leaves in its schedule's ``last_error``: its error when it
    failed or was lost, else nothing."""
    return error if status in _FAILURES else None


def record_outcome(
    session: Session,
    row: Any,
    *,
    status: ExecutionStatus,
    error: str | None,
    now: datetime,
    replaced_lost_ms: int | None = None,
) -> None:
    """Count a finished row ``(id, scheduled_task_id, started_at, duration_ms)`` on its
    schedule. A run that never started is no run: it sets only ``last_status``,
    ``last_execution_id`` and ``last_error``."""
    execution_id, schedule_id, started_at, duration_ms = row
    if schedule_id is None:
        return
    streak = streak_of(
        status, started=started_at is not None, replaced_lost=replaced_lost_ms is not None
    )
    runs, successes, failures, runtime = counters(
        status,
        started=started_at is not None,
        duration_ms=duration_ms,
        replaced_lost_ms=replaced_lost_ms,
    )
    outcome = params(
        schedule_id=schedule_id,
        last_status=status,
        execution_id=execution_id,
        last_error=last_error(status, error),
        runs=runs,
        successes=successes,
        failures=failures,
        runtime=runtime,
        last_run_at=started_at,
    )
    session.execute(outcome_statement(started=started_at is not None), outcome | streak.params())
    if streak.delta > 0:
        pause_on_failures(session, [schedule_id], now=now)
