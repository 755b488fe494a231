"""The unsent sweep's statements: slots claimed and not sent (a scheduler died between
its claim and its send, or the broker refused them) and ``queued`` slots waiting their
turn, read by schedule with what ``core.backlog.sweep_schedule`` decides by; then
recorded ``missed`` or turned ``pending`` to be sent. Functions never commit: the caller
owns the transaction (and the schedule rows' locks while it sends).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from dataforge_scheduler.core.backlog import InFlight
from dataforge_scheduler.core.enums import (
    ExecutionStatus,
    ExecutionTrigger,
    MisfirePolicy,
    OverlapPolicy,
)
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.store.claims import (  # the claim's own helpers
    _UNFINISHED_SLOTS,
    _executions,
    _literal,
    _locked,
    _schedules,
    claimed_run,
    unsent_slots,
)
from dataforge_scheduler.sql.store.common import aware_now

__all__ = [
    "UnsentBacklog",
    "in_flight",
    "mark_missed",
    "revoke_retrying",
    "select_unsent",
    "send_queued",
]


@dataclass(frozen=True)
class UnsentBacklog:
    """One schedule's claimed but unsent slots, oldest first, and what the sweep decides
    them by (``core.backlog.sweep_schedule``): the schedule's policies, the newest slot
    it has any row for, and whether another of its runs is in flight (sent and not
    finished, or claimed so recently that its scheduler may still be sending it)."""

    misfire_policy: MisfirePolicy
    overlap_policy: OverlapPolicy
    slots: list[ClaimedSlot]
    newest_slot: datetime | None
    in_flight: bool
    queued: frozenset[int] = frozenset()  # execution ids of the slots that waited their turn


def select_unsent(
    session: Session,
    *,
    created_before: datetime,
    limit: int,
    extra: ColumnElement[bool] | None = None,
    sent_since: datetime | None = None,
) -> tuple[list[UnsentBacklog], list[int]]:
    """Slots claimed before ``created_before`` and never recorded as sent, by schedule.

    Their scheduler died between its commit and its send, or the broker refused the
    send; with them come the ``queued`` slots (a ``catch_up`` backlog waiting its turn),
    whatever their age. The schedules' rows are locked
    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (as a claim locks them), so two sweeping
    schedulers never decide for one schedule at once, and a claim never plans a schedule
    while a sweep decides for it. Returns the backlogs of the schedules this sweep
    locked (up to ``limit`` schedules), and the ids of unsent slots whose schedule was
    deleted. A duplicate send would still be harmless: a worker runs a slot only from
    ``pending``. A run counts as in flight while it runs or retries, while its claim's
    lease lasts, and, once sent, until it starts, if it was sent after ``sent_since``
    (None: however long ago).
    """
    e, s = _executions.c, _schedules.c
    # a backfill's slots wait their own turn (sql.store.backfill), not the misfire
    # policy's; literals, matching ix_task_executions_waiting (models.WAITING_PREDICATE)
    queued = and_(
        e.status == _literal(ExecutionStatus.QUEUED),
        e.trigger != _literal(ExecutionTrigger.BACKFILL),
    )
    found = [
        *session.execute(
            select(e.id, e.scheduled_task_id).where(*unsent_slots(created_before)).limit(limit * 10)
        ),
        *session.execute(select(e.id, e.scheduled_task_id).where(queued).limit(limit * 10)),
    ]
    orphans = [row.id for row in found if row.scheduled_task_id is None]
    wanted = sorted({row.scheduled_task_id for row in found if row.scheduled_task_id})[:limit]
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
    ids = list(schedules)
    rows = session.execute(
        select(
            e.id,
            e.celery_task_id,
            e.scheduled_task_id,
            e.task_name,
            e.scheduled_for,
            e.kwargs,
            e.status,
        )
        .where(
            or_(and_(*unsent_slots(created_before)), queued),
            e.scheduled_task_id.in_(ids),
        )
        .order_by(e.scheduled_task_id, e.scheduled_for)
    ).all()
    # the newest slot per schedule: one backward probe of the unique (schedule, slot) index
    newest_query = select(
        s.id,
        select(func.max(e.scheduled_for)).where(e.scheduled_task_id == s.id).scalar_subquery(),
    ).where(s.id.in_(ids))
    newest = {row[0]: row[1] for row in session.execute(newest_query)}
    open_statuses = [
        _literal(status)
        for status in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.RETRYING)
    ]
    in_flight = set(
        session.scalars(
            select(e.scheduled_task_id)
            .where(
                e.status.in_(open_statuses),
                e.scheduled_task_id.in_(ids),
                or_(
                    e.status != _literal(ExecutionStatus.PENDING),
                    e.sent_at.is_not(None)
                    if sent_since is None
                    else e.sent_at > aware_now(sent_since),
                    and_(e.sent_at.is_(None), e.created_at > aware_now(created_before)),
                ),
            )
            .distinct()
        )
    )
    by_schedule: dict[int, list[ClaimedSlot]] = {}
    waited: set[int] = set()
    for row in rows:
        if row.status == ExecutionStatus.QUEUED:
            waited.add(row.id)
        schedule = schedules[row.scheduled_task_id]
        by_schedule.setdefault(row.scheduled_task_id, []).append(
            claimed_run(
                row.id,
                row.celery_task_id,
                schedule=schedule,
                task_name=row.task_name,
                scheduled_for=row.scheduled_for,
                kwargs=dict(row.kwargs or {}),
                resend=True,
            )
        )
    backlogs = [
        UnsentBacklog(
            misfire_policy=MisfirePolicy(schedules[sid].misfire_policy),
            overlap_policy=OverlapPolicy(schedules[sid].overlap_policy),
            slots=slots,
            newest_slot=newest.get(sid),
            in_flight=sid in in_flight,
            queued=frozenset(slot.execution_id for slot in slots if slot.execution_id in waited),
        )
        for sid, slots in by_schedule.items()
    ]
    return backlogs, orphans


def in_flight(
    session: Session, schedule_ids: Sequence[int], *, sent_since: datetime
) -> dict[int, InFlight]:
    """What each of these schedules has going, for its overlap policy
    (``core.backlog.apply_overlap``): its ``queued`` slots, its slots claimed and not
    sent, and its runs in flight: running, retrying, or sent after ``sent_since`` and
    not started yet (the broker holds them). One statement on the status prefix of the
    reaper index; schedules with nothing going are left out."""
    if not schedule_ids:
        return {}
    e = _executions.c
    query = select(e.scheduled_task_id, e.status, e.celery_task_id, e.sent_at).where(
        e.status.in_(
            [
                _literal(status)
                for status in (
                    ExecutionStatus.QUEUED,
                    ExecutionStatus.PENDING,
                    ExecutionStatus.RUNNING,
                    ExecutionStatus.RETRYING,
                )
            ]
        ),
        e.scheduled_task_id.in_(list(schedule_ids)),
        or_(
            e.status != _literal(ExecutionStatus.PENDING),
            e.sent_at.is_(None),
            e.sent_at > aware_now(sent_since),
        ),
        # a backfill's waiting slots hold back none of the schedule's own
        or_(
            e.status != _literal(ExecutionStatus.QUEUED),
            e.trigger != _literal(ExecutionTrigger.BACKFILL),
        ),
    )
    waiting: dict[int, int] = {}
    unsent: dict[int, int] = {}
    runs: dict[int, list[str]] = {}
    unstarted: set[int] = set()
    for sid, status, celery_task_id, sent_at in session.execute(query):
        if sid is None:
            continue
        if status == ExecutionStatus.QUEUED:
            waiting[sid] = waiting.get(sid, 0) + 1
        elif status == ExecutionStatus.PENDING and sent_at is None:
            unsent[sid] = unsent.get(sid, 0) + 1
        else:
            runs.setdefault(sid, []).append(celery_task_id)
            if status == ExecutionStatus.PENDING:
                unstarted.add(sid)
    return {
        sid: InFlight(
            waiting=waiting.get(sid, 0),
            runs=tuple(runs.get(sid, ())),
            unstarted=sid in unstarted,
            unsent=unsent.get(sid, 0),
        )
        for sid in waiting.keys() | runs.keys() | unsent.keys()
    }


def send_queued(session: Session, execution_ids: Sequence[int]) -> None:
    """Turn these ``queued`` slots ``pending``, their turn come, before they are sent
    (in the sweep's transaction: a worker's start waits on the row until it commits)."""
    if not execution_ids:
        return
    e = _executions.c
    session.execute(
        update(_executions)
        .where(e.id.in_(list(execution_ids)), e.status == ExecutionStatus.QUEUED)
        .values(status=ExecutionStatus.PENDING)
    )


def mark_missed(session: Session, missed: Sequence[tuple[int, str]], *, now: datetime) -> None:
    """Record unsent ``pending`` or ``queued`` slots as ``missed``, each with its reason (one
    executemany UPDATE); a slot sent or finished meanwhile is left alone."""
    if not missed:
        return
    e = _executions.c
    statement = (
        update(_executions)
        .where(
            e.id == bindparam("b_id"),
            # literals: an expanding IN cannot go with executemany
            e.status.in_([_literal(status) for status in _UNFINISHED_SLOTS]),
            e.sent_at.is_(None),
        )
        .values(
            status=ExecutionStatus.MISSED,
            finished_at=aware_now(now),
            error=bindparam("b_error", type_=e.error.type),
        )
    )
    session.execute(statement, [{"b_id": id_, "b_error": reason} for id_, reason in missed])


def revoke_retrying(
    session: Session, celery_task_ids: Sequence[str], *, reason: str, now: datetime
) -> int:
    """Record these runs ``revoked`` with ``reason`` if they are ``retrying``: a retry
    waiting out its countdown is cancelled at once (its revoked message is dropped when
    its time comes). How many rows changed."""
    if not celery_task_ids:
        return 0
    e = _executions.c
    done = session.execute(
        update(_executions)
        .where(
            e.celery_task_id.in_(list(celery_task_ids)),
            e.status == _literal(ExecutionStatus.RETRYING),
        )
        .values(status=ExecutionStatus.REVOKED, finished_at=aware_now(now), error=reason)
    )
    return int(getattr(done, "rowcount", 0) or 0)
