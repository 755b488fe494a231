"""History statements: the outbox's records applied to ``task_executions`` in one
transaction per batch (the history writer's job, and the worker's own when Redis is down).

A run whose records in the batch are its start and its final end, for one attempt (a
short run: the usual case), is written once: every such run of the batch goes into one
multi-row ``INSERT ... ON CONFLICT (celery_task_id) DO UPDATE ... WHERE <the run may
start> RETURNING``, and the schedule counters of the rows it wrote are then updated once
per schedule. Everything else (a start or an end alone, a retry, a redelivery, a row the
database holds in a state that write may not touch, such as a ``lost`` verdict) goes
through ``runs.start_run`` and ``runs.finish_run`` record by record, in the order they
were appended, with their rules. Either way the outcome is the one those functions would
give; the combined write only saves statements. Functions never commit: the caller owns
the transaction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.core.journal import FinishRecord, Record, StartRecord
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution
from dataforge_scheduler.sql.store.common import (
    aware_now,
    capped_json,
    clean_text,
    dialect_insert,
    json_safe,
)
from dataforge_scheduler.sql.store.counters import (
    Streak,
    counters,
    last_error,
    outcome_statement,
    pause_on_failures,
    streak_of,
)
from dataforge_scheduler.sql.store.runs import DEFAULT_RESULT_MAX_BYTES, finish_run, start_run

__all__ = ["HistoryApplied", "apply_history"]

logger = logging.getLogger(__name__)

_RUNS_TABLE = cast(sa.Table, TaskExecution.__table__)
_RUNS = _RUNS_TABLE.c
_SCHEDULES = cast(sa.Table, ScheduledTask.__table__).c
_MILLISECOND = timedelta(milliseconds=1)


@dataclass
class HistoryApplied:
    """What one batch did: rows written in one statement (``combined``), records applied
    one by one (``sequential``), and starts the database refused (``refused_starts``:
    the row had already started or finished, so that delivery was a duplicate)."""

    combined: int = 0
    sequential: int = 0
    refused_starts: list[str] = field(default_factory=list)


def apply_history(
    session: Session,
    records: Sequence[Record],
    *,
    result_max_bytes: int = DEFAULT_RESULT_MAX_BYTES,
) -> HistoryApplied:
    """Apply ``records`` (in the order they were appended) in the caller's transaction."""
    applied = HistoryApplied()
    by_run: dict[str, list[Record]] = {}
    for record in records:
        by_run.setdefault(record.celery_task_id, []).append(record)
    pairs = {run: steps for run, steps in by_run.items() if _combinable(steps)}
    written = _write_combined(session, pairs, result_max_bytes=result_max_bytes)
    applied.combined = len(written)
    for run, steps in by_run.items():
        if run in written:
            continue
        for step in steps:
            applied.sequential += 1
            if isinstance(step, StartRecord):
                if _start(session, step) is None:
                    applied.refused_starts.append(run)
            else:
                _finish(session, step, result_max_bytes=result_max_bytes)
    return applied


def _combinable(steps: list[Record]) -> bool:
    if len(steps) != 2:
        return False
    start, end = steps
    return (
        isinstance(start, StartRecord)
        and isinstance(end, FinishRecord)
        and end.final
        and not start.redelivered
        and end.attempt == start.retries
    )


def _start(session: Session, record: StartRecord) -> Any:
    return start_run(
        session,
        celery_task_id=record.celery_task_id,
        task_name=record.task_name,
        scheduled_task_id=record.scheduled_task_id,
        trigger=record.trigger,
        worker_hostname=record.worker_hostname,
        worker_pid=record.worker_pid,
        kwargs=record.kwargs,
        retries=record.retries,
        now=record.at,
        redelivered=record.redelivered,
    )


def _finish(session: Session, record: FinishRecord, *, result_max_bytes: int) -> Any:
    return finish_run(
        session,
        celery_task_id=record.celery_task_id,
        status=record.status,
        now=record.at,
        result=record.result,
        error=record.error,
        traceback=record.traceback,
        log_output=record.log,
        result_max_bytes=result_max_bytes,
        attempt=record.attempt,
    )


_COMBINED = (
    "celery_task_id",
    "task_name",
    "trigger",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "worker_hostname",
    "worker_pid",
    "retries",
    "kwargs",
    "result",
    "error",
    "traceback",
    "log_output",
)
_WRITTEN_BY_WORKER = (
    "status",
    "started_at",
    "finished_at",
    "duration_ms",
    "worker_hostname",
    "worker_pid",
    "retries",
    "result",
    "error",
    "traceback",
)


def _param(name: str, column: sa.ColumnElement[Any]) -> sa.BindParameter[Any]:
    # prefixed: a bind parameter may not take a column's name in INSERT or UPDATE
    return sa.bindparam(f"p_{name}", type_=column.type)


@functools.cache
def _combined_statement(insert: Callable[..., Any]) -> Any:
    """The combined write, built once per dialect: executed with one parameter set per
    run, SQLAlchemy sends it as multi-row ``INSERT ... VALUES`` batches ("insertmanyvalues")
    from one cached compilation."""
    values: dict[str, Any] = {name: _param(name, _RUNS[name]) for name in _COMBINED}
    # a schedule deleted since the run started leaves the run without one (not an error)
    values["scheduled_task_id"] = (
        select(_SCHEDULES.id)
        .where(_SCHEDULES.id == sa.bindparam("p_schedule_id", type_=sa.Integer))
        .scalar_subquery()
    )
    statement = insert(_RUNS_TABLE).values(values)
    incoming = statement.excluded
    update: dict[str, Any] = {name: getattr(incoming, name) for name in _WRITTEN_BY_WORKER}
    update["log_output"] = sa.func.coalesce(incoming.log_output, _RUNS.log_output)
    return statement.on_conflict_do_update(
        index_elements=[_RUNS.celery_task_id],
        set_=update,
        where=sa.or_(
            _RUNS.status == ExecutionStatus.PENDING,
            sa.and_(_RUNS.status == ExecutionStatus.RETRYING, _RUNS.retries == incoming.retries),
            sa.and_(_RUNS.status == ExecutionStatus.RUNNING, _RUNS.retries < incoming.retries),
        ),
    ).returning(
        _RUNS.celery_task_id,
        _RUNS.id,
        _RUNS.scheduled_task_id,
        _RUNS.started_at,
        _RUNS.duration_ms,
        _RUNS.status,
        _RUNS.error,
    )


def _params(start: StartRecord, end: FinishRecord, *, result_max_bytes: int) -> dict[str, Any]:
    elapsed = (end.at - start.at) / _MILLISECOND
    return {
        "p_celery_task_id": start.celery_task_id,
        "p_task_name": start.task_name,
        "p_schedule_id": start.scheduled_task_id,
        "p_trigger": ExecutionTrigger(start.trigger),
        "p_status": end.status,
        "p_created_at": start.at,
        "p_started_at": start.at,
        "p_finished_at": end.at,
        # as the SQL of runs.finish_run rounds it: half away from zero
        "p_duration_ms": int(elapsed + 0.5) if elapsed >= 0 else -int(-elapsed + 0.5),
        "p_worker_hostname": start.worker_hostname,
        "p_worker_pid": start.worker_pid,
        "p_retries": start.retries,
        "p_kwargs": json_safe(dict(start.kwargs)),
        "p_result": capped_json(end.result, max_bytes=result_max_bytes),
        "p_error": clean_text(end.error),
        "p_traceback": clean_text(end.traceback),
        "p_log_output": clean_text(end.log),
    }


def _write_combined(
    session: Session, pairs: dict[str, list[Record]], *, result_max_bytes: int
) -> set[str]:
    """One statement for every run given as (start, final end); the runs it wrote."""
    if not pairs:
        return set()
    params = [
        _params(
            cast(StartRecord, steps[0]),
            cast(FinishRecord, steps[1]),
            result_max_bytes=result_max_bytes,
        )
        for steps in pairs.values()
    ]
    statement = _combined_statement(dialect_insert(session))
    returned = {row[0]: row for row in session.execute(statement, params)}
    ended = max(cast(FinishRecord, steps[1]).at for steps in pairs.values())
    _count_on_schedules(
        session, [returned[run] for run in pairs if run in returned], now=aware_now(ended)
    )
    return set(returned)


def _count_on_schedules(session: Session, rows: list[Any], *, now: datetime) -> None:
    """One counters UPDATE per schedule for the rows written (in batch order: the last
    row of a schedule is its ``last_*``)."""
    totals: dict[int, list[Any]] = {}
    streaks: dict[int, Streak] = {}
    for _, execution_id, schedule_id, started_at, duration_ms, status, error in rows:
        if schedule_id is None:
            continue
        runs, successes, failures, runtime = counters(
            ExecutionStatus(status), started=True, duration_ms=duration_ms
        )
        streak = streak_of(ExecutionStatus(status), started=True)
        streaks[schedule_id] = streaks.get(schedule_id, Streak()).then(streak)
        total = totals.setdefault(schedule_id, [0, 0, 0, 0, None, None, None, None])
        total[0] += runs
        total[1] += successes
        total[2] += failures
        total[3] += runtime
        total[4:] = [
            ExecutionStatus(status),
            execution_id,
            started_at,
            last_error(ExecutionStatus(status), error),
        ]
    if not totals:
        return
    params = [
        {
            "p_schedule_id": schedule_id,
            "p_runs": runs,
            "p_successes": successes,
            "p_failures": failures,
            "p_runtime": runtime,
            "p_last_status": last_status,
            "p_execution_id": last_id,
            "p_last_run_at": last_run_at,
            "p_last_error": error,
            **streaks[schedule_id].params(),
        }
        for schedule_id, (
            runs,
            successes,
            failures,
            runtime,
            last_status,
            last_id,
            last_run_at,
            error,
        ) in totals.items()
    ]
    session.execute(outcome_statement(started=True), params)
    failing = [schedule_id for schedule_id, streak in streaks.items() if streak.delta > 0]
    if failing:
        pause_on_failures(session, failing, now=now)
