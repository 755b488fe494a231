"""Maintenance statements: find runs that may be lost, re-check one under its row lock,
and delete old history in bounded batches.

The reaper reads ``running`` rows through the ``(status, started_at)`` index with keyset
pagination, so a pass over many live runs never re-reads a page; before it marks a run
``lost`` it locks the row (``FOR UPDATE`` on PostgreSQL; SQLite serialises writers) and
checks that it is still the same attempt, so a run that finished or retried meanwhile is
left alone. ``pending`` and ``retrying`` rows (a message that never came) are read the
same way, by the ``status`` prefix of that index and keyset on id, and re-checked under
the row lock against the instant they began to wait. Retention deletes finished rows
only, one ``DELETE ... WHERE id IN (SELECT ... LIMIT n)`` per call. Functions never
commit: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus, OverlapPolicy
from dataforge_scheduler.sql.models import AuditEntry, ScheduledTask, TaskExecution
from dataforge_scheduler.sql.store.common import aware_now

__all__ = [
    "FINISHED_STATUSES",
    "RunningRun",
    "WaitingRun",
    "delete_audit_before",
    "delete_finished_before",
    "lock_running_run",
    "lock_waiting_run",
    "select_running_before",
    "select_waiting_before",
]

#: The states a run never leaves; only these are deleted by retention.
FINISHED_STATUSES = tuple(status for status in ExecutionStatus if status.finished)


@dataclass(frozen=True)
class RunningRun:
    """A ``running`` row as the reaper judges it (a plain value: safe after the session).

    ``schedule_overlap_policy`` is the policy of the schedule the row still points at
    (None when it has none, or the schedule was deleted).
    """

    id: int
    celery_task_id: str
    task_name: str
    scheduled_task_id: int | None
    started_at: datetime
    retries: int
    worker_hostname: str | None
    worker_pid: int | None
    schedule_overlap_policy: OverlapPolicy | None


def select_running_before(
    session: Session,
    *,
    cutoff: datetime,
    after: tuple[datetime, int] | None = None,
    limit: int,
) -> list[RunningRun]:
    """Up to ``limit`` ``running`` rows started before ``cutoff``, oldest first.

    ``after`` is the ``(started_at, id)`` of the last row of the previous page: rows a
    pass judged alive stay ``running``, so paging by position would loop on them.
    """
    cutoff = aware_now(cutoff)
    query = (
        select(
            TaskExecution.id,
            TaskExecution.celery_task_id,
            TaskExecution.task_name,
            TaskExecution.scheduled_task_id,
            TaskExecution.started_at,
            TaskExecution.retries,
            TaskExecution.worker_hostname,
            TaskExecution.worker_pid,
            ScheduledTask.overlap_policy,
        )
        .outerjoin(ScheduledTask, ScheduledTask.id == TaskExecution.scheduled_task_id)
        .where(
            TaskExecution.status == ExecutionStatus.RUNNING,
            TaskExecution.started_at < cutoff,
        )
        .order_by(TaskExecution.started_at, TaskExecution.id)
        .limit(limit)
    )
    if after is not None:
        last_started, last_id = aware_now(after[0]), after[1]
        query = query.where(
            # the plain lower bound lets the index range scan start at the page boundary
            TaskExecution.started_at >= last_started,
            or_(
                TaskExecution.started_at > last_started,
                and_(TaskExecution.started_at == last_started, TaskExecution.id > last_id),
            ),
        )
    return [
        RunningRun(
            id=row.id,
            celery_task_id=row.celery_task_id,
            task_name=row.task_name,
            scheduled_task_id=row.scheduled_task_id,
            started_at=row.started_at,
            retries=row.retries,
            worker_hostname=row.worker_hostname,
            worker_pid=row.worker_pid,
            schedule_overlap_policy=row.overlap_policy,
        )
        for row in session.execute(query)
    ]


def lock_running_run(session: Session, run: RunningRun) -> TaskExecution | None:
    """Lock ``run``'s row and return it if it is still that same running attempt.

    ``None`` when the row finished, moved to ``retrying``, or a later attempt started
    (another ``started_at`` or ``retries``) since ``run`` was read: the reaper's verdict
    was about an attempt that no longer runs there.
    """
    query = (
        select(TaskExecution)
        .where(
            TaskExecution.id == run.id,
            TaskExecution.status == ExecutionStatus.RUNNING,
            TaskExecution.started_at == run.started_at,
            TaskExecution.retries == run.retries,
        )
        .with_for_update()
    )
    found: TaskExecution | None = session.scalars(
        query, execution_options={"populate_existing": True}
    ).first()
    return found


@dataclass(frozen=True)
class WaitingRun:
    """A ``pending`` or ``retrying`` row as the reaper judges it (a plain value).

    ``since`` is when it began to wait for its message: a ``pending`` row's ``sent_at``
    (its ``created_at`` when never sent); a ``retrying`` row's ``started_at``, the start
    of the attempt that asked for the retry (its ``created_at`` if it never started).
    """

    id: int
    celery_task_id: str
    task_name: str
    scheduled_task_id: int | None
    status: ExecutionStatus
    retries: int
    since: datetime


def _since(status: ExecutionStatus) -> ColumnElement[datetime]:
    later = TaskExecution.sent_at if status is ExecutionStatus.PENDING else TaskExecution.started_at
    return func.coalesce(later, TaskExecution.created_at)


def select_waiting_before(
    session: Session,
    *,
    status: ExecutionStatus,
    cutoff: datetime,
    after_id: int = 0,
    limit: int,
) -> list[WaitingRun]:
    """Up to ``limit`` rows in ``status`` (``pending`` or ``retrying``) waiting since
    before ``cutoff``, by id after ``after_id`` (rows judged alive stay; see above)."""
    if status not in (ExecutionStatus.PENDING, ExecutionStatus.RETRYING):
        raise ValueError(f"status {status.value!r} does not wait for a message")
    cutoff = aware_now(cutoff)
    since = _since(status)
    query = (
        select(
            TaskExecution.id,
            TaskExecution.celery_task_id,
            TaskExecution.task_name,
            TaskExecution.scheduled_task_id,
            TaskExecution.retries,
            since.label("since"),
        )
        .where(
            TaskExecution.status == status,
            # every "since" is at or after created_at: this bound adds no condition and
            # lets the created_at index narrow the candidates
            TaskExecution.created_at < cutoff,
            since < cutoff,
            TaskExecution.id > after_id,
        )
        .order_by(TaskExecution.id)
        .limit(limit)
    )
    return [
        WaitingRun(
            id=row.id,
            celery_task_id=row.celery_task_id,
            task_name=row.task_name,
            scheduled_task_id=row.scheduled_task_id,
            status=status,
            retries=row.retries,
            since=aware_now(row.since),
        )
        for row in session.execute(query)
    ]


def lock_waiting_run(session: Session, run: WaitingRun) -> TaskExecution | None:
    """Lock ``run``'s row and return it if it still waits as ``run`` was read (same
    status, attempt and ``since``): ``None`` when a worker started it or it was re-sent."""
    query = (
        select(TaskExecution)
        .where(
            TaskExecution.id == run.id,
            TaskExecution.status == run.status,
            TaskExecution.retries == run.retries,
            _since(run.status) == run.since,
        )
        .with_for_update()
    )
    found: TaskExecution | None = session.scalars(
        query, execution_options={"populate_existing": True}
    ).first()
    return found


def delete_finished_before(session: Session, *, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` finished rows whose ``finished_at`` is before ``cutoff``.

    Returns how many were deleted. ``pending``, ``running`` and ``retrying`` rows are
    never touched, however old.
    """
    cutoff = aware_now(cutoff)
    doomed = (
        select(TaskExecution.id)
        .where(
            TaskExecution.status.in_(FINISHED_STATUSES),
            TaskExecution.finished_at < cutoff,
            # a run is created before it finishes, so this adds no condition; it lets
            # the created_at index find the candidates (finished_at has no index)
            TaskExecution.created_at < cutoff,
        )
        .limit(limit)
    )
    result = session.execute(
        delete(TaskExecution).where(TaskExecution.id.in_(doomed)),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def delete_audit_before(session: Session, *, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` audit entries recorded before ``cutoff`` (the ``at`` index
    finds them); how many were deleted."""
    cutoff = aware_now(cutoff)
    doomed = select(AuditEntry.id).where(AuditEntry.at < cutoff).limit(limit)
    result = session.execute(
        delete(AuditEntry).where(AuditEntry.id.in_(doomed)),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)
