"""Execution statements: a run starts, retries, finishes, and is read back.

These sit on every run's path, so each step is as few statements as the dialects allow:
starting is one upsert, finishing is one UPDATE of the run plus one arithmetic UPDATE of
its schedule's counters in the same transaction (no read-modify-write). A run whose row
is already past ``pending`` is never started twice: a duplicate delivery gets ``None``.
Functions never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.errors import ExecutionNotFound
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution
from dataforge_scheduler.sql.store.common import (
    Page,
    aware_now,
    capped_json,
    clean_text,
    dialect_insert,
    fetch_page,
    invalid_param,
    json_safe,
)
from dataforge_scheduler.sql.types import UTCDateTime

__all__ = [
    "DEFAULT_RESULT_MAX_BYTES",
    "finish_execution",
    "get_execution",
    "get_execution_by_celery_id",
    "list_executions",
    "start_execution",
]

DEFAULT_RESULT_MAX_BYTES = 65536

_STARTABLE = (ExecutionStatus.PENDING, ExecutionStatus.RETRYING)
_OPEN = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.RETRYING)
# a body ran: these count as runs; skipped and revoked ones never started the work
_COUNTED = frozenset({ExecutionStatus.SUCCESS, ExecutionStatus.FAILED, ExecutionStatus.LOST})
_FAILURES = frozenset({ExecutionStatus.FAILED, ExecutionStatus.LOST})
_RETURNING = {"populate_existing": True}


def start_execution(
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
) -> TaskExecution | None:
    """Move the run to ``running``: its ``pending``/``retrying`` row if one exists (claimed
    by a scheduler or the API, or a retry), else a new row. ``None`` when the row is
    already running or finished: a duplicate delivery, whose body must not run.

    One statement: ``INSERT ... ON CONFLICT (celery_task_id) DO UPDATE ... WHERE status
    IN ('pending', 'retrying') RETURNING``. The existing row keeps its schedule, slot,
    trigger and kwargs; only the worker's side is written.
    """
    now = aware_now(now)
    insert = dialect_insert(session)(TaskExecution).values(
        celery_task_id=celery_task_id,
        task_name=task_name,
        scheduled_task_id=scheduled_task_id,
        trigger=ExecutionTrigger(trigger),
        status=ExecutionStatus.RUNNING,
        created_at=now,
        started_at=now,
        worker_hostname=worker_hostname,
        worker_pid=worker_pid,
        retries=retries,
        kwargs=json_safe(dict(kwargs)),
    )
    worker_side = ("status", "started_at", "worker_hostname", "worker_pid", "retries")
    statement = insert.on_conflict_do_update(
        index_elements=[TaskExecution.celery_task_id],
        set_={name: getattr(insert.excluded, name) for name in worker_side},
        where=TaskExecution.status.in_(_STARTABLE),
    ).returning(TaskExecution)
    started: TaskExecution | None = session.scalars(statement, execution_options=_RETURNING).first()
    return started


def finish_execution(
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
) -> TaskExecution | None:
    """Record the run's outcome and, in the same transaction, its schedule's counters.

    ``result`` is stored JSON-safe, replaced by ``{"truncated": true, "preview": ...}``
    when its JSON exceeds ``result_max_bytes``. ``retrying`` records the error and counts
    the retry but leaves the schedule alone. ``None`` when the row is already finished
    (or retrying, for a second ``retrying``) or unknown: finishing is idempotent.
    """
    now = aware_now(now)
    status = ExecutionStatus(status)
    if status is ExecutionStatus.RETRYING:
        return _mark_retrying(
            session, celery_task_id, error=error, traceback=traceback, log_output=log_output
        )
    if not status.finished:
        raise ValueError(f"status {status.value!r} does not finish a run")
    dialect = session.get_bind().dialect.name
    statement = (
        update(TaskExecution)
        .where(TaskExecution.celery_task_id == celery_task_id, TaskExecution.status.in_(_OPEN))
        .values(
            status=status,
            finished_at=now,
            duration_ms=_elapsed_ms(dialect, TaskExecution.started_at, now=now),
            result=capped_json(result, max_bytes=result_max_bytes),
            error=clean_text(error),
            traceback=clean_text(traceback),
            log_output=clean_text(log_output),
        )
        .returning(TaskExecution)
    )
    finished: TaskExecution | None = session.scalars(
        statement, execution_options=_RETURNING
    ).first()
    if finished is not None and finished.scheduled_task_id is not None:
        _record_outcome(session, finished, status=status, now=now)
    return finished


def _elapsed_ms(
    dialect: str, start: InstrumentedAttribute[datetime | None], *, now: datetime
) -> ColumnElement[int]:
    end = sa.literal(now, UTCDateTime())
    if dialect == "postgresql":
        seconds: ColumnElement[Any] = sa.extract("epoch", end - start)
    else:  # SQLite keeps datetimes as text; julianday() reads them as days
        seconds = (sa.func.julianday(end) - sa.func.julianday(start)) * 86400
    return sa.cast(sa.func.round(seconds * 1000), sa.Integer)


def _record_outcome(
    session: Session, execution: TaskExecution, *, status: ExecutionStatus, now: datetime
) -> None:
    counted = status in _COUNTED
    runtime = (execution.duration_ms or 0) if counted else 0
    session.execute(
        update(ScheduledTask)
        .where(ScheduledTask.id == execution.scheduled_task_id)
        .values(
            last_run_at=execution.started_at or now,
            last_status=status,
            last_execution_id=execution.id,
            run_count=ScheduledTask.run_count + int(counted),
            success_count=ScheduledTask.success_count + int(status is ExecutionStatus.SUCCESS),
            failure_count=ScheduledTask.failure_count + int(status in _FAILURES),
            total_runtime_ms=ScheduledTask.total_runtime_ms + runtime,
        )
    )


def _mark_retrying(
    session: Session,
    celery_task_id: str,
    *,
    error: str | None,
    traceback: str | None,
    log_output: str | None,
) -> TaskExecution | None:
    values: dict[str, Any] = {
        "status": ExecutionStatus.RETRYING,
        "retries": TaskExecution.retries + 1,
        "error": clean_text(error),
        "traceback": clean_text(traceback),
    }
    if log_output is not None:
        values["log_output"] = clean_text(log_output)
    statement = (
        update(TaskExecution)
        .where(
            TaskExecution.celery_task_id == celery_task_id,
            TaskExecution.status.in_((ExecutionStatus.PENDING, ExecutionStatus.RUNNING)),
        )
        .values(values)
        .returning(TaskExecution)
    )
    retrying: TaskExecution | None = session.scalars(
        statement, execution_options=_RETURNING
    ).first()
    return retrying


def get_execution(session: Session, execution_id: int) -> TaskExecution:
    """The execution with ``execution_id``; ``ExecutionNotFound`` if there is none."""
    found = session.get(TaskExecution, execution_id)
    if found is None:
        raise ExecutionNotFound(f"no execution with id {execution_id}", execution_id=execution_id)
    return found


def get_execution_by_celery_id(session: Session, celery_task_id: str) -> TaskExecution | None:
    """The execution Celery knows as ``celery_task_id``, or ``None``."""
    query = select(TaskExecution).where(TaskExecution.celery_task_id == celery_task_id)
    found: TaskExecution | None = session.scalars(query).first()
    return found


def list_executions(
    session: Session,
    *,
    scheduled_task_id: int | None = None,
    status: str | None = None,
    page: int = 1,
    page_size: int = 50,
) -> Page[TaskExecution]:
    """A page of executions, newest first, optionally of one schedule and one status."""
    query = select(TaskExecution)
    if scheduled_task_id is not None:
        query = query.where(TaskExecution.scheduled_task_id == scheduled_task_id)
    if status is not None:
        try:
            wanted = ExecutionStatus(status)
        except ValueError:
            allowed = ", ".join(member.value for member in ExecutionStatus)
            raise invalid_param(
                "status", status, message=f"status must be one of {allowed}, got {status!r}"
            ) from None
        query = query.where(TaskExecution.status == wanted)
    order_by: list[ColumnElement[Any]] = [
        TaskExecution.created_at.desc(),
        TaskExecution.id.desc(),
    ]
    return fetch_page(session, query, order_by=order_by, page=page, page_size=page_size)
