"""A schedule's counters: what one finished run adds to ``run_count``,
``success_count``, ``failure_count``, ``total_runtime_ms`` and the ``last_*`` fields, as
one arithmetic UPDATE (no read-modify-write), built once. Shared by the run statements
(``store.runs``) and the history writer's batches (``store.history``).

Only a run that started counts: ``success``, ``failed`` and ``lost`` rows with a
``started_at``. A real outcome that replaces a ``lost`` verdict first takes back what
the verdict counted. Functions never commit: the caller owns the transaction.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import update
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.sql.models import ScheduledTask

__all__ = ["counters", "last_error", "outcome_statement", "param", "params", "record_outcome"]

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


@functools.cache
def outcome_statement(*, started: bool) -> Any:
    """The one UPDATE of a schedule's counters: increments (negative to undo a verdict)."""
    values: dict[str, Any] = {
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
    replaced_lost_ms: int | None = None,
) -> None:
    """Count a finished row ``(id, scheduled_task_id, started_at, duration_ms)`` on its
    schedule. A run that never started is no run: it sets only ``last_status``,
    ``last_execution_id`` and ``last_error``."""
    execution_id, schedule_id, started_at, duration_ms = row
    if schedule_id is None:
        return
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
    session.execute(outcome_statement(started=started_at is not None), outcome)
