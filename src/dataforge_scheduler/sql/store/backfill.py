"""A backfill's statements: its slots inserted ``queued`` (trigger ``backfill``), the
ones that already had a row read back, the rest cancelled, and the beat's turn: one
slot of a schedule sent at a time, oldest first, while nothing else of it is open.

The backfill rows are the schedule's own slots (``(scheduled_task_id, scheduled_for)``
is unique), so a slot is never run twice, whoever inserted it first. They wait apart
from the scheduler's own ``queued`` slots: the unsent sweep and the overlap policies
(``sweep.select_unsent``, ``sweep.in_flight``) leave them alone, so a backfill never
delays or crowds out the schedule's own slots, and the misfire policy never drops
them. Functions never commit: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from dataforge_scheduler.core.backfill import BackfillSlot
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.core.timing import stored_utc
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.store.claims import (  # the claim's own helpers
    _executions,
    _literal,
    _locked,
    _schedules,
    claimed_run,
)
from dataforge_scheduler.sql.store.common import aware_now, dialect_insert, json_safe

__all__ = [
    "cancel_backfill",
    "existing_slots",
    "insert_backfill",
    "requeue_backfill",
    "select_backfill",
]

_OPEN = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.RETRYING)


def _waiting() -> list[ColumnElement[bool]]:
    # literals, matching ix_task_executions_backfill's predicate (models.BACKFILL_PREDICATE)
    e = _executions.c
    return [
        e.status == _literal(ExecutionStatus.QUEUED),
        e.trigger == _literal(ExecutionTrigger.BACKFILL),
    ]


def existing_slots(
    session: Session, schedule_id: int, slots: Sequence[datetime]
) -> list[BackfillSlot]:
    """The rows ``schedule_id`` already has for these slots (any trigger, any status),
    oldest first: one range read of the unique ``(schedule, slot)`` index."""
    if not slots:
        return []
    e = _executions.c
    wanted = {aware_now(slot) for slot in slots}
    rows = session.execute(
        select(e.scheduled_for, e.id, e.status)
        .where(
            e.scheduled_task_id == schedule_id,
            e.scheduled_for >= min(wanted),
            e.scheduled_for <= max(wanted),
        )
        .order_by(e.scheduled_for)
    )
    found = [
        BackfillSlot(stored_utc(row.scheduled_for), row.id, ExecutionStatus(row.status))
        for row in rows
    ]
    return [slot for slot in found if slot.scheduled_for in wanted]


def insert_backfill(
    session: Session, schedule: ScheduledTask, slots: Sequence[datetime], *, now: datetime
) -> tuple[list[BackfillSlot], list[BackfillSlot]]:
    """Insert a ``queued`` backfill row for each slot that has no row yet, with the
    schedule's kwargs as its claim would have them. Returns (created, existing), each
    oldest first."""
    if not slots:
        return [], []
    now = aware_now(now)
    kwargs = json_safe({**(schedule.handler_kwargs or {}), "scheduled_task_id": schedule.id})
    values = [
        {
            "scheduled_task_id": schedule.id,
            "scheduled_for": aware_now(slot),
            "task_name": schedule.task_name,
            "celery_task_id": str(uuid.uuid4()),
            "trigger": ExecutionTrigger.BACKFILL,
            "status": ExecutionStatus.QUEUED,
            "kwargs": kwargs,
            "created_at": now,
        }
        for slot in slots
    ]
    statement = (
        dialect_insert(session)(_executions)
        .on_conflict_do_nothing(
            index_elements=[_executions.c.scheduled_task_id, _executions.c.scheduled_for]
        )
        .returning(_executions.c.scheduled_for, _executions.c.id)
    )
    inserted = {stored_utc(row.scheduled_for): row.id for row in session.execute(statement, values)}
    created = [
        BackfillSlot(slot, inserted[slot], ExecutionStatus.QUEUED) for slot in sorted(inserted)
    ]
    others = [slot for slot in slots if aware_now(slot) not in inserted]
    return created, existing_slots(session, schedule.id, others)


def cancel_backfill(session: Session, schedule_id: int, *, reason: str, now: datetime) -> int:
    """End the backfill slots of ``schedule_id`` still waiting ``revoked`` with
    ``reason``; a slot already sent runs on (cancel that run itself). How many ended."""
    e = _executions.c
    done = session.execute(
        update(_executions)
        .where(*_waiting(), e.scheduled_task_id == schedule_id)
        .values(status=ExecutionStatus.REVOKED, finished_at=aware_now(now), error=reason)
    )
    return int(getattr(done, "rowcount", 0) or 0)


def _schedules_waiting(session: Session, limit: int) -> list[int]:
    """Up to ``limit`` ids of schedules with backfill slots waiting, smallest first: a
    loose index scan (one probe of ``ix_task_executions_backfill`` per schedule, however
    many slots each has waiting)."""
    e = _executions.c
    first = select(func.min(e.scheduled_task_id).label("sid")).where(*_waiting())
    ids = first.cte("backfilling", recursive=True)
    after = (
        select(func.min(e.scheduled_task_id))
        .where(*_waiting(), e.scheduled_task_id > ids.c.sid)
        .scalar_subquery()
    )
    ids = ids.union_all(select(after).where(ids.c.sid.is_not(None)))
    query = select(ids.c.sid).where(ids.c.sid.is_not(None)).limit(limit)
    return [int(sid) for sid in session.scalars(query)]


def select_backfill(
    session: Session, *, now: datetime, limit: int, extra: ColumnElement[bool] | None = None
) -> tuple[list[ClaimedSlot], list[int]]:
    """The next backfill slot of each schedule whose turn it is, and the ids of waiting
    backfill slots whose schedule was deleted.

    A schedule's turn comes when nothing else of it is open: no run pending, running or
    retrying, and none of its own slots ``queued``. Its row is locked ``FOR UPDATE SKIP
    LOCKED`` on PostgreSQL, as a claim and the sweep lock it, so a slot of its own and a
    backfill slot are never sent together, and two beats never send two backfill slots
    of one schedule. Up to ``limit`` schedules; the slots come back oldest first, ready
    to turn ``pending`` (``sweep.send_queued``) and send in the caller's transaction
    (claimed at ``now``: a backfill run's ``expire_seconds`` count from its send, not
    from its long-past slot). Every look-up is an index probe per schedule: the cost
    follows how many schedules have a backfill, not how many slots wait.
    """
    now = aware_now(now)
    e = _executions.c
    orphans = list(session.scalars(select(e.id).where(*_waiting(), e.scheduled_task_id.is_(None))))
    wanted = _schedules_waiting(session, limit)
    if not wanted:
        return [], orphans
    query = select(ScheduledTask).where(ScheduledTask.id.in_(wanted))
    if extra is not None:
        query = query.where(extra)
    schedules = {
        row.id: row
        for row in session.scalars(
            _locked(session, query), execution_options={"populate_existing": True}
        )
    }
    if not schedules:
        return [], orphans
    busy = set(
        session.scalars(
            select(e.scheduled_task_id)
            .where(
                e.scheduled_task_id.in_(list(schedules)),
                or_(
                    e.status.in_([_literal(status) for status in _OPEN]),
                    and_(
                        e.status == _literal(ExecutionStatus.QUEUED),
                        e.trigger != _literal(ExecutionTrigger.BACKFILL),
                    ),
                ),
            )
            .distinct()
        )
    )
    free = [sid for sid in schedules if sid not in busy]
    if not free:
        return [], orphans
    s = _schedules.c
    oldest = select(func.min(e.scheduled_for)).where(*_waiting(), e.scheduled_task_id == s.id)
    pairs = [
        (row[0], row[1])
        for row in session.execute(select(s.id, oldest.scalar_subquery()).where(s.id.in_(free)))
        if row[1] is not None
    ]
    if not pairs:
        return [], orphans
    rows = session.execute(
        select(e.id, e.celery_task_id, e.scheduled_task_id, e.task_name, e.scheduled_for, e.kwargs)
        .where(tuple_(e.scheduled_task_id, e.scheduled_for).in_(pairs))
        .order_by(e.scheduled_for, e.scheduled_task_id)
    )
    return [
        claimed_run(
            row.id,
            row.celery_task_id,
            schedule=schedules[row.scheduled_task_id],
            task_name=row.task_name,
            scheduled_for=stored_utc(row.scheduled_for),
            kwargs=dict(row.kwargs or {}),
            trigger=ExecutionTrigger.BACKFILL,
            claimed_at=now,
        )
        for row in rows
    ], orphans


def requeue_backfill(session: Session, execution_ids: Sequence[int]) -> None:
    """Put backfill slots the broker refused back in line (``pending`` and unsent back
    to ``queued``), so the next pass sends them again in their turn."""
    if not execution_ids:
        return
    e = _executions.c
    session.execute(
        update(_executions)
        .where(
            e.id.in_(list(execution_ids)),
            e.status == ExecutionStatus.PENDING,
            e.sent_at.is_(None),
        )
        .values(status=ExecutionStatus.QUEUED)
    )
