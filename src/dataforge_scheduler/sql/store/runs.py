"""Run statements: a run starts, retries and finishes (the worker's path, and whoever
finishes a run from outside it: the reaper, the worker's main process, the API).

These sit on every run's path, so each act is as few statements as the dialects allow,
built once per dialect and variant as Core statements with bind parameters, answering
plain values rather than ORM rows. Starting is one upsert; finishing is one UPDATE of the
run plus one arithmetic UPDATE of its schedule's counters (``store.counters``) in the
same transaction (no read-modify-write). A run whose row is already past ``pending`` is
never started twice: a duplicate delivery gets ``None``. Retries keep one row per
Celery task id; ``retries`` on the row is the attempt number, which orders the
overlapping attempts Celery produces
(the next attempt can start before the previous one has recorded ``retrying``: see
docs/internals.md §2). A ``retrying`` row is started only by the attempt
it waits for. A run's real outcome replaces a ``lost`` verdict on the same attempt (the
reaper can be wrong: a lock lost with a Redis restart), undoing the failure it counted.
A run that never started (``started_at`` NULL) is not counted as a run. Functions never
commit: the caller owns the transaction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger, OverlapPolicy
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution
from dataforge_scheduler.sql.store.common import (
    aware_now,
    capped_json,
    clean_text,
    dialect_insert,
    json_safe,
)
from dataforge_scheduler.sql.store.counters import param as _param
from dataforge_scheduler.sql.store.counters import params as _params
from dataforge_scheduler.sql.store.counters import (
    record_outcome,
)

__all__ = [
    "DEFAULT_RESULT_MAX_BYTES",
    "RunFinished",
    "RunStarted",
    "finish_run",
    "start_run",
]

logger = logging.getLogger(__name__)

DEFAULT_RESULT_MAX_BYTES = 65536

_OPEN = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.RETRYING)

_RUNS_TABLE = cast(sa.Table, TaskExecution.__table__)
_SCHEDULES_TABLE = cast(sa.Table, ScheduledTask.__table__)
_RUNS = _RUNS_TABLE.c
_SCHEDULES = _SCHEDULES_TABLE.c

# The schedule's policy rides on the RETURNING of the start statement, so a run learns it
# without a second round trip. Written as text because SQLite renders RETURNING columns
# unqualified, which makes a generated correlated subquery ambiguous there.
_SCHEDULE_OVERLAP = sa.literal_column(
    "(SELECT s.overlap_policy FROM scheduled_tasks AS s"
    " WHERE s.id = task_executions.scheduled_task_id)",
    sa.String,
).label("schedule_overlap_policy")


@dataclass(frozen=True)
class RunStarted:
    """A run moved to ``running``: its row, schedule and the schedule's overlap policy
    (None: no schedule)."""

    execution_id: int
    scheduled_task_id: int | None
    overlap_policy: OverlapPolicy | None


@dataclass(frozen=True)
class RunFinished:
    """A run's row that ``finish_run`` changed, and the status it now has."""

    execution_id: int
    scheduled_task_id: int | None
    status: ExecutionStatus


# ---------------------------------------------------------------- start


@functools.cache
def _start_statement(insert: Callable[..., Any], *, redelivered: bool) -> Any:
    schedule_ref = (
        select(_SCHEDULES.id).where(_SCHEDULES.id == _param("schedule_id", _SCHEDULES.id))
    ).scalar_subquery()
    now = _param("now", _RUNS.started_at)
    statement = insert(_RUNS_TABLE).values(
        celery_task_id=_param("celery_task_id", _RUNS.celery_task_id),
        task_name=_param("task_name", _RUNS.task_name),
        scheduled_task_id=schedule_ref,
        trigger=_param("trigger", _RUNS.trigger),
        status=ExecutionStatus.RUNNING,
        created_at=now,
        started_at=now,
        worker_hostname=_param("worker_hostname", _RUNS.worker_hostname),
        worker_pid=_param("worker_pid", _RUNS.worker_pid),
        retries=_param("retries", _RUNS.retries),
        kwargs=_param("kwargs", _RUNS.kwargs),
    )
    attempt = statement.excluded.retries
    running = _RUNS.status == ExecutionStatus.RUNNING
    startable = [
        _RUNS.status == ExecutionStatus.PENDING,
        sa.and_(_RUNS.status == ExecutionStatus.RETRYING, _RUNS.retries == attempt),
        sa.and_(running, _RUNS.retries < attempt),
    ]
    if redelivered:
        startable.append(sa.and_(running, _RUNS.retries == attempt))
    worker_side = ("status", "started_at", "worker_hostname", "worker_pid", "retries")
    return statement.on_conflict_do_update(
        index_elements=[_RUNS.celery_task_id],
        set_={name: getattr(statement.excluded, name) for name in worker_side},
        where=sa.or_(*startable),
    ).returning(_RUNS.id, _RUNS.scheduled_task_id, _SCHEDULE_OVERLAP)


def start_run(
    session: Session,
    *,
    celery_task_id: str,
    task_name: str,
    scheduled_task_id: int | None,
    trigger: str,
    worker_hostname: str | None,
    worker_pid: int | None,
    kwargs: Mapping[str, Any],
    retries: int,
    now: datetime,
    redelivered: bool = False,
) -> RunStarted | None:
    """Move the run to ``running``; ``None`` for a duplicate delivery.

    The row is its ``pending`` row if one exists (claimed by a scheduler or the API), its
    ``retrying`` row when this is the attempt the row waits for (``retries`` equal: the
    retry of attempt N is attempt N+1, and ``retrying`` stored N+1), or the ``running``
    row of an earlier attempt that has not yet recorded ``retrying`` (``retries`` lower
    than this attempt's), else a new row. ``None`` when the row is already running this
    attempt, waits for another attempt, or finished: a duplicate delivery, whose body
    must not run. ``redelivered`` (a broker redelivery of a task that requeues its
    message when its worker is lost) may also restart the ``running`` row of this same
    attempt: that worker died, and Celery sent no signal for it.

    One statement: ``INSERT ... ON CONFLICT (celery_task_id) DO UPDATE ... WHERE ...
    RETURNING``. The existing row keeps its schedule, slot, trigger and kwargs; only the
    worker's side is written. A ``scheduled_task_id`` that names no schedule is stored as
    NULL (the run is kept, the dangling reference is not).
    """
    statement = _start_statement(dialect_insert(session), redelivered=redelivered)
    params = _params(
        celery_task_id=celery_task_id,
        task_name=task_name,
        schedule_id=scheduled_task_id,
        trigger=ExecutionTrigger(trigger),
        now=aware_now(now),
        worker_hostname=worker_hostname,
        worker_pid=worker_pid,
        retries=retries,
        kwargs=json_safe(dict(kwargs)),
    )
    row = session.execute(statement, params).first()
    if row is None:
        return None
    policy = row[2]
    return RunStarted(
        execution_id=row[0],
        scheduled_task_id=row[1],
        overlap_policy=None if policy is None else OverlapPolicy(policy),
    )


# ---------------------------------------------------------------- finish


def _elapsed_ms(
    dialect: str, start: ColumnElement[Any] | Any, end: ColumnElement[datetime]
) -> ColumnElement[int]:
    """Milliseconds from ``start`` (the row's ``started_at``) to ``end``."""
    if dialect == "postgresql":
        seconds: ColumnElement[Any] = sa.extract("epoch", end - start)
    else:  # SQLite keeps datetimes as text; julianday() reads them as days
        seconds = (sa.func.julianday(end) - sa.func.julianday(start)) * 86400
    return sa.cast(sa.func.round(seconds * 1000), sa.Integer)


@functools.cache
def _finish_statement(dialect: str, *, with_log: bool, over_lost: bool) -> Any:
    """Finish an open row (or, ``over_lost``, the ``lost`` row of one attempt)."""
    values: dict[str, Any] = {
        "status": _param("status", _RUNS.status),
        "finished_at": _param("now", _RUNS.finished_at),
        "duration_ms": _elapsed_ms(dialect, _RUNS.started_at, _param("now", _RUNS.finished_at)),
        "result": _param("result", _RUNS.result),
        "error": _param("error", _RUNS.error),
        "traceback": _param("traceback", _RUNS.traceback),
    }
    if with_log:
        values["log_output"] = _param("log_output", _RUNS.log_output)
    which = _RUNS.celery_task_id == _param("celery_task_id", _RUNS.celery_task_id)
    if over_lost:
        state = sa.and_(
            _RUNS.status == ExecutionStatus.LOST,
            _RUNS.retries == sa.bindparam("p_attempt", type_=sa.Integer),
        )
    else:
        state = _RUNS.status.in_(_OPEN)
    return (
        update(_RUNS_TABLE)
        .where(which, state)
        .values(values)
        .returning(_RUNS.id, _RUNS.scheduled_task_id, _RUNS.started_at, _RUNS.duration_ms)
    )


def finish_run(
    session: Session,
    *,
    celery_task_id: str,
    status: ExecutionStatus,
    now: datetime,
    result: Any = None,
    error: str | None = None,
    traceback: str | None = None,
    log_output: str | None = None,
    result_max_bytes: int = DEFAULT_RESULT_MAX_BYTES,
    attempt: int | None = None,
) -> RunFinished | None:
    """Record the run's outcome and, in the same transaction, its schedule's counters.

    ``result`` is stored JSON-safe, replaced by ``{"truncated": true, "preview": ...}``
    when its JSON exceeds ``result_max_bytes``. ``retrying`` records the error and counts
    the retry but leaves the schedule alone; given ``attempt`` (the attempt's
    ``request.retries``), it acts only while the row is still at that attempt, so a late
    ``retrying`` never overwrites the next attempt, which may already be running.
    ``log_output`` None keeps the stored log (an earlier attempt's, or none).
    ``None`` when the row is already finished (or retrying, for a second ``retrying``)
    or unknown: finishing is idempotent. One exception: the outcome of the run itself
    (``attempt`` given) replaces a ``lost`` verdict on that same attempt, reversing the
    failure it counted, with a WARNING.
    """
    now = aware_now(now)
    status = ExecutionStatus(status)
    if status is ExecutionStatus.RETRYING:
        return _mark_retrying(
            session,
            celery_task_id,
            error=error,
            traceback=traceback,
            log_output=log_output,
            attempt=attempt,
        )
    if not status.finished:
        raise ValueError(f"status {status.value!r} does not finish a run")
    dialect = session.get_bind().dialect.name
    params = _params(
        celery_task_id=celery_task_id,
        status=status,
        now=now,
        result=capped_json(result, max_bytes=result_max_bytes),
        error=clean_text(error),
        traceback=clean_text(traceback),
        log_output=clean_text(log_output),
    )
    with_log = log_output is not None
    statement = _finish_statement(dialect, with_log=with_log, over_lost=False)
    row = session.execute(statement, params).first()
    if row is not None:
        record_outcome(session, row, status=status, error=params["p_error"], now=now)
        return RunFinished(row[0], row[1], status)
    if attempt is None or status is ExecutionStatus.LOST:
        return None
    return _replace_lost(session, celery_task_id, params=params, status=status, attempt=attempt)


def _replace_lost(
    session: Session,
    celery_task_id: str,
    *,
    params: dict[str, Any],
    status: ExecutionStatus,
    attempt: int,
) -> RunFinished | None:
    """The run's own outcome over a ``lost`` verdict on its attempt (the rare path)."""
    lost = session.execute(
        select(_RUNS.id, _RUNS.task_name, _RUNS.started_at, _RUNS.duration_ms, _RUNS.error)
        .where(
            _RUNS.celery_task_id == celery_task_id,
            _RUNS.status == ExecutionStatus.LOST,
            _RUNS.retries == attempt,
        )
        .with_for_update()
    ).first()
    if lost is None:
        return None
    # what the verdict counted: a run and a failure, when the run had started
    counted_ms = (lost.duration_ms or 0) if lost.started_at is not None else None
    dialect = session.get_bind().dialect.name
    with_log = params["p_log_output"] is not None
    statement = _finish_statement(dialect, with_log=with_log, over_lost=True)
    row = session.execute(statement, {**params, "p_attempt": attempt}).first()
    if row is None:
        return None
    logger.warning(
        "execution %d (%s, task %s) was marked lost (%s) but its run ended %s: "
        "the lost verdict is replaced by the real outcome",
        lost.id,
        lost.task_name,
        celery_task_id,
        lost.error,
        status.value,
    )
    record_outcome(
        session,
        row,
        status=status,
        error=params["p_error"],
        now=params["p_now"],
        replaced_lost_ms=counted_ms,
    )
    return RunFinished(row[0], row[1], status)


@functools.cache
def _retrying_statement(*, with_log: bool, at_attempt: bool) -> Any:
    values: dict[str, Any] = {
        "status": ExecutionStatus.RETRYING,
        "retries": _RUNS.retries + 1,
        "error": _param("error", _RUNS.error),
        "traceback": _param("traceback", _RUNS.traceback),
    }
    if with_log:
        values["log_output"] = _param("log_output", _RUNS.log_output)
    conditions = [
        _RUNS.celery_task_id == _param("celery_task_id", _RUNS.celery_task_id),
        _RUNS.status.in_((ExecutionStatus.PENDING, ExecutionStatus.RUNNING)),
    ]
    if at_attempt:
        conditions.append(_RUNS.retries == sa.bindparam("p_attempt", type_=sa.Integer))
    return (
        update(_RUNS_TABLE)
        .where(*conditions)
        .values(values)
        .returning(_RUNS.id, _RUNS.scheduled_task_id)
    )


def _mark_retrying(
    session: Session,
    celery_task_id: str,
    *,
    error: str | None,
    traceback: str | None,
    log_output: str | None,
    attempt: int | None,
) -> RunFinished | None:
    statement = _retrying_statement(with_log=log_output is not None, at_attempt=attempt is not None)
    params = _params(
        celery_task_id=celery_task_id,
        error=clean_text(error),
        traceback=clean_text(traceback),
        log_output=clean_text(log_output),
        attempt=attempt,
    )
    row = session.execute(statement, params).first()
    return None if row is None else RunFinished(row[0], row[1], ExecutionStatus.RETRYING)
