"""Execution statements for readers and for "run now": read runs back, list them, make
the ``pending`` row of a manual run, and record that a run's message was sent.

"Run now" inserts a ``pending`` row with trigger ``manual`` (and the Celery task id it
is about to use) in the caller's transaction, commits, and only then sends the message,
exactly as a scheduler claims a slot before sending it; the worker then moves that same
row to ``running`` and on (``store.runs``). Once the broker took a message, ``mark_sent``
records ``sent_at`` (the first send wins), for a manual run and a claimed slot alike: the
reaper judges a ``pending`` row by how long ago it was sent (or made, when never sent).
Manual runs have ``scheduled_for`` NULL, so they never collide with claimed slots.
"Run early" (``skip_next_slot``) takes the next slot's key with a ``skipped`` row, so no
scheduler claims it. Functions never commit: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger, TaskStatus
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.errors import ConflictError, ExecutionNotFound
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution
from dataforge_scheduler.sql.store.claims import claimed_run
from dataforge_scheduler.sql.store.common import (
    aware_now,
    dialect_insert,
    invalid_param,
    json_safe,
)
from dataforge_scheduler.sql.store.paging import Order, Page, fetch_page

__all__ = [
    "cancel_execution",
    "create_manual_run",
    "get_execution",
    "get_execution_by_celery_id",
    "list_executions",
    "mark_sent",
    "rerun_ids",
    "skip_next_slot",
    "unskip_slot",
]

_EXECUTIONS = cast(sa.Table, TaskExecution.__table__)


def get_execution(session: Session, execution_id: int) -> TaskExecution:
    """The execution with ``execution_id``; ``ExecutionNotFound`` if there is none."""
    found = session.get(TaskExecution, execution_id)
    if found is None:
        raise ExecutionNotFound(f"no execution with id {execution_id}", execution_id=execution_id)
    return found


def cancel_execution(
    session: Session, execution_id: int, *, reason: str, now: datetime
) -> tuple[ExecutionStatus, TaskExecution]:
    """Cancel a run in the database, under its row's lock: one not started (``pending``,
    ``queued``, or ``retrying`` between attempts) ends ``revoked`` with ``reason`` at
    once; a ``running`` one is left for its worker to record when it stops. Returns the
    status it had and the row. ``ConflictError`` naming the status when the run had
    already ended; ``ExecutionNotFound`` when there is no such run."""
    row = session.get(TaskExecution, execution_id, with_for_update=True)
    if row is None:
        raise ExecutionNotFound(f"no execution with id {execution_id}", execution_id=execution_id)
    before = ExecutionStatus(row.status)
    if before.finished:
        raise ConflictError(
            f"execution {execution_id} has already ended ({before}): there is nothing to cancel",
            execution_id=execution_id,
            status=str(before),
        )
    if before is not ExecutionStatus.RUNNING:
        row.status = ExecutionStatus.REVOKED
        row.finished_at = aware_now(now)
        row.error = reason
    session.flush()
    return before, row


def rerun_ids(session: Session, execution_id: int) -> list[int]:
    """The ids of the runs that ran execution ``execution_id`` again, oldest first."""
    query = (
        select(TaskExecution.id)
        .where(TaskExecution.rerun_of == execution_id)
        .order_by(TaskExecution.id)
    )
    return list(session.scalars(query))


def get_execution_by_celery_id(session: Session, celery_task_id: str) -> TaskExecution | None:
    """The execution Celery knows as ``celery_task_id``, or ``None``."""
    query = select(TaskExecution).where(TaskExecution.celery_task_id == celery_task_id)
    found: TaskExecution | None = session.scalars(query).first()
    return found


_NEWEST_FIRST = Order("-created_at", TaskExecution.id, TaskExecution.created_at, descending=True)


def list_executions(
    session: Session,
    *,
    scheduled_task_id: int | None = None,
    status: str | None = None,
    task_name: str | None = None,
    trigger: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int | None = None,
    page_size: int = 50,
    cursor: str | None = None,
    count: bool = False,
) -> Page[TaskExecution]:
    """A page of executions, newest first (by ``created_at``), matching every filter
    given: one schedule, one status, one task name, one trigger, made at or after
    ``since`` and before ``until``. Paging as ``store.paging.fetch_page``."""
    query = select(TaskExecution)
    if scheduled_task_id is not None:
        query = query.where(TaskExecution.scheduled_task_id == scheduled_task_id)
    if status is not None:
        wanted = _one_of("status", status, ExecutionStatus)
        query = query.where(TaskExecution.status == wanted)
    if trigger is not None:
        query = query.where(TaskExecution.trigger == _one_of("trigger", trigger, ExecutionTrigger))
    if task_name is not None:
        query = query.where(TaskExecution.task_name == task_name)
    if since is not None:
        query = query.where(TaskExecution.created_at >= aware_now(since))
    if until is not None:
        query = query.where(TaskExecution.created_at < aware_now(until))
    return fetch_page(
        session,
        query,
        order=_NEWEST_FIRST,
        page=page,
        page_size=page_size,
        cursor=cursor,
        count=count,
    )


def _one_of(field: str, value: str, enum: type[Any]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise invalid_param(
            field, value, message=f"{field} must be one of {allowed}, got {value!r}"
        ) from None


def create_manual_run(
    session: Session,
    *,
    schedule: ScheduledTask | None,
    task_name: str,
    celery_task_id: str,
    kwargs: Mapping[str, Any],
    now: datetime,
    rerun_of: int | None = None,
) -> ClaimedSlot:
    """Insert the ``pending`` row of a manual run of ``schedule`` (or of a bare task name,
    with no schedule), a rerun of execution ``rerun_of`` when given, and return it ready
    to send (flushed, not committed)."""
    now = aware_now(now)
    execution = TaskExecution(
        scheduled_task_id=None if schedule is None else schedule.id,
        task_name=task_name,
        celery_task_id=celery_task_id,
        trigger=ExecutionTrigger.MANUAL,
        status=ExecutionStatus.PENDING,
        created_at=now,
        kwargs=json_safe(dict(kwargs)),
        rerun_of=rerun_of,
    )
    session.add(execution)
    session.flush()
    return claimed_run(
        execution.id,
        celery_task_id,
        schedule=schedule,
        task_name=task_name,
        scheduled_for=None,
        kwargs=dict(execution.kwargs),
        trigger=ExecutionTrigger.MANUAL,
        claimed_at=now,
    )


def skip_next_slot(
    session: Session, schedule: ScheduledTask, *, reason: str, now: datetime
) -> datetime:
    """Take the schedule's next slot (``next_run_at``) out of its future: its execution
    row is inserted ``skipped`` with ``reason``, so no scheduler can claim it (the slot's
    key is taken) and the next pass moves past it. Call it holding the schedule's row
    lock. Returns the slot. ``ConflictError`` when the schedule has no next slot (not
    active, manual, or done) or a scheduler has claimed it already."""
    slot = schedule.next_run_at
    status = TaskStatus(schedule.status)
    if status is not TaskStatus.ACTIVE or slot is None:
        state = str(status) if status is not TaskStatus.ACTIVE else "no next run"
        raise ConflictError(
            f"schedule {schedule.id} has no next slot to skip ({state})",
            field="skip_next",
            schedule_id=schedule.id,
        )
    now = aware_now(now)
    statement = (
        dialect_insert(session)(_EXECUTIONS)
        .values(
            scheduled_task_id=schedule.id,
            scheduled_for=slot,
            task_name=schedule.task_name,
            celery_task_id=str(uuid.uuid4()),
            trigger=ExecutionTrigger.SCHEDULE,
            status=ExecutionStatus.SKIPPED,
            created_at=now,
            finished_at=now,
            # what the slot would have sent, so a rerun of it runs the schedule's kwargs
            kwargs=json_safe({**(schedule.handler_kwargs or {}), "scheduled_task_id": schedule.id}),
            error=reason,
        )
        .on_conflict_do_nothing(
            index_elements=[_EXECUTIONS.c.scheduled_task_id, _EXECUTIONS.c.scheduled_for]
        )
        .returning(_EXECUTIONS.c.id)
    )
    if session.execute(statement).first() is None:
        raise ConflictError(
            f"schedule {schedule.id}'s next slot ({slot.isoformat()}) already has a run (a "
            "scheduler claimed it, or an earlier run early skipped it)",
            field="skip_next",
            schedule_id=schedule.id,
        )
    return slot


def unskip_slot(session: Session, schedule_id: int, slot: datetime) -> bool:
    """Give back ``slot``, which ``skip_next_slot`` took for a run early that was never
    sent: under the schedule's row lock, its ``skipped`` row is deleted while the
    schedule has not moved past it (a scheduler then claims it as planned); once it has,
    the row stays and says why. Returns whether it was given back."""
    slot = aware_now(slot)
    schedule = session.get(ScheduledTask, schedule_id, with_for_update=True)
    mine = (
        _EXECUTIONS.c.scheduled_task_id == schedule_id,
        _EXECUTIONS.c.scheduled_for == slot,
        _EXECUTIONS.c.status == ExecutionStatus.SKIPPED,
        _EXECUTIONS.c.started_at.is_(None),
    )
    upcoming = None if schedule is None else schedule.next_run_at
    if upcoming is not None and aware_now(upcoming) == slot:
        session.execute(sa.delete(_EXECUTIONS).where(*mine))
        return True
    passed = "ran early, but that run could not be sent; the slot had passed meanwhile"
    session.execute(sa.update(_EXECUTIONS).where(*mine).values(error=passed))
    return False


def mark_sent(session: Session, execution_ids: Sequence[int], *, now: datetime) -> None:
    """Record that these runs' messages reached the broker (the first send wins)."""
    if not execution_ids:
        return
    session.execute(
        update(TaskExecution)
        .where(TaskExecution.id.in_(list(execution_ids)), TaskExecution.sent_at.is_(None))
        .values(sent_at=aware_now(now))
    )
