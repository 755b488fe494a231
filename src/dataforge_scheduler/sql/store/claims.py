"""Claim statements: what the beat scheduler runs to find due slots, claim them and
record their sends.

A pass of ``DatabaseScheduler`` is a handful of set-based statements whose cost follows
what is due, never how many schedules exist: each reads through the ``(status,
next_run_at)`` index (or the ``status`` prefix of the executions' reaper index). On
PostgreSQL the schedule rows a pass works on are locked with ``FOR UPDATE SKIP LOCKED``,
so several schedulers share the table without waiting on each other; SQLite has no row
locks and runs one scheduler. A slot is claimed by inserting its ``pending`` execution
row: ``(scheduled_task_id, scheduled_for)`` is unique, so a slot is claimed at most
once, whoever tries. Functions never commit: the caller owns the transaction; the
one exception is ``probe``, which takes the engine and reads outside a transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import (
    ExecutionStatus,
    ExecutionTrigger,
    TaskStatus,
    TaskType,
)
from dataforge_scheduler.core.slots import Advance, ClaimedSlot, NewSlot, RowPlan
from dataforge_scheduler.core.timing import stored_utc
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution, metadata
from dataforge_scheduler.sql.store.common import (
    aware_now,
    database_error,
    dialect_insert,
    json_safe,
)

__all__ = [
    "DUE_TYPES",
    "Probe",
    "advance_schedules",
    "claimed_run",
    "claimed_slots",
    "count_active",
    "earliest_next_run",
    "insert_slots",
    "probe",
    "select_due",
    "select_uninitialised",
    "unsent_slots",
]

#: The task types a scheduler fires by itself (``manual`` runs only through the API).
DUE_TYPES = (TaskType.CRON, TaskType.INTERVAL, TaskType.DATE)

_UNFINISHED_SLOTS = (ExecutionStatus.PENDING, ExecutionStatus.QUEUED)
_schedules = metadata.tables[ScheduledTask.__tablename__]
_executions = metadata.tables[TaskExecution.__tablename__]


def _locked(session: Session, query: Select[Any], *, of: Any = None) -> Select[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=of)
    return query


def _active(extra: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
    clauses = [ScheduledTask.status == TaskStatus.ACTIVE, ScheduledTask.task_type.in_(DUE_TYPES)]
    if extra is not None:
        clauses.append(extra)
    return clauses


def _literal(value: StrEnum) -> ColumnElement[str]:
    # written into the SQL, never bound: a partial index's predicate matches a constant
    # in a prepared statement's generic plan, never a parameter
    return literal_column(f"'{value.value}'", String)


def select_uninitialised(
    session: Session, *, limit: int, extra: ColumnElement[bool] | None = None
) -> list[ScheduledTask]:
    """Active rows with no ``next_run_at`` yet (inserted by raw SQL), locked on PostgreSQL.

    The constants are literals matching ``ix_scheduled_tasks_uninitialised``'s predicate
    (``models.UNINITIALISED_PREDICATE``), so the scan reads only the few such rows.
    """
    query = select(ScheduledTask).where(
        ScheduledTask.next_run_at.is_(None),
        ScheduledTask.status == _literal(TaskStatus.ACTIVE),
        ScheduledTask.task_type.in_([_literal(task_type) for task_type in DUE_TYPES]),
    )
    if extra is not None:
        query = query.where(extra)
    query = _locked(session, query.limit(limit))
    return list(session.scalars(query, execution_options={"populate_existing": True}))


def select_due(
    session: Session,
    *,
    now: datetime,
    limit: int,
    extra: ColumnElement[bool] | None = None,
) -> list[ScheduledTask]:
    """Up to ``limit`` active rows with ``next_run_at <= now``, earliest first.

    On PostgreSQL they are locked ``FOR UPDATE SKIP LOCKED``: rows another scheduler
    holds are left to it. ``extra`` narrows the rows (a subclass's partition).
    """
    query = (
        select(ScheduledTask)
        .where(ScheduledTask.next_run_at <= aware_now(now), *_active(extra))
        .order_by(ScheduledTask.next_run_at)
        .limit(limit)
    )
    query = _locked(session, query)
    return list(session.scalars(query, execution_options={"populate_existing": True}))


def insert_slots(session: Session, slots: Sequence[NewSlot], *, now: datetime) -> dict[str, int]:
    """Insert the slots' execution rows, skipping slots already claimed.

    One ``INSERT ... ON CONFLICT (scheduled_task_id, scheduled_for) DO NOTHING RETURNING``
    executed for all slots: SQLAlchemy batches the parameter sets into multi-row VALUES
    ("insertmanyvalues"), which costs less than compiling a literal VALUES list per call.
    Returns ``{celery_task_id: execution_id}`` of the rows inserted: a slot missing from
    it belongs to whoever claimed it first and must not be sent.
    """
    if not slots:
        return {}
    now = aware_now(now)
    values = [
        {
            "scheduled_task_id": slot.scheduled_task_id,
            "scheduled_for": slot.scheduled_for,
            "task_name": slot.task_name,
            "celery_task_id": slot.celery_task_id,
            "trigger": ExecutionTrigger.SCHEDULE,
            "status": slot.status,
            "kwargs": json_safe(slot.kwargs),
            "created_at": now,
            "finished_at": None if slot.status in _UNFINISHED_SLOTS else now,
            "error": slot.error,
        }
        for slot in slots
    ]
    statement = (
        dialect_insert(session)(_executions)
        .on_conflict_do_nothing(
            index_elements=[_executions.c.scheduled_task_id, _executions.c.scheduled_for]
        )
        .returning(_executions.c.celery_task_id, _executions.c.id)
    )
    return {row.celery_task_id: row.id for row in session.execute(statement, values)}


def advance_schedules(session: Session, advances: Sequence[Advance]) -> None:
    """Write each row's new ``next_run_at`` and status (one executemany UPDATE).

    ``updated_at`` and ``version`` are left alone: a claim is not a configuration change.
    """
    if not advances:
        return
    columns = _schedules.c
    statement = (
        update(_schedules)
        .where(columns.id == bindparam("b_id"))
        .values(
            next_run_at=bindparam("b_next", type_=columns.next_run_at.type),
            status=bindparam("b_status", type_=columns.status.type),
            last_status=func.coalesce(
                bindparam("b_last_status", type_=columns.last_status.type), columns.last_status
            ),
            last_execution_id=func.coalesce(
                bindparam("b_last_execution", type_=columns.last_execution_id.type),
                columns.last_execution_id,
            ),
            last_error=func.coalesce(
                bindparam("b_last_error", type_=columns.last_error.type), columns.last_error
            ),
            # NULL (no limit) stays NULL; never below 0
            max_runs=case(
                (columns.max_runs > bindparam("b_taken"), columns.max_runs - bindparam("b_taken")),
                else_=case((columns.max_runs.is_(None), None), else_=0),
            ),
            updated_at=columns.updated_at,  # suppresses the column's onupdate
        )
    )
    params = [
        {
            "b_id": advance.schedule_id,
            "b_next": advance.next_run_at,
            "b_status": advance.status,
            "b_last_status": advance.last_status,
            "b_last_execution": advance.last_execution_id,
            "b_last_error": advance.last_error,
            "b_taken": advance.runs_taken,
        }
        for advance in advances
    ]
    session.execute(statement, params)


def unsent_slots(created_before: datetime | None = None) -> list[ColumnElement[bool]]:
    """The conditions of a claimed slot never sent (claimed at or before
    ``created_before`` when given)."""
    e = _executions.c
    conditions = [
        # a literal status, so even a generic plan reads the partial index
        # ix_task_executions_unsent (models.UNSENT_PREDICATE): only unsent pending rows
        e.status == _literal(ExecutionStatus.PENDING),
        e.sent_at.is_(None),
        e.trigger == ExecutionTrigger.SCHEDULE,
        e.scheduled_for.is_not(None),
    ]
    if created_before is not None:
        conditions.append(e.created_at <= aware_now(created_before))
    return conditions


@dataclass(frozen=True)
class Probe:
    """What a pass looks at first, in one statement: the database's time (None unless
    asked), the earliest ``next_run_at`` of the active rows, whether an active row has
    no ``next_run_at`` yet (inserted by raw SQL), when the oldest unsent slot was
    claimed, whether any slot is ``queued`` and whether a backfill's slots wait."""

    server_now: datetime | None
    earliest: datetime | None
    uninitialised: bool
    oldest_unsent: datetime | None
    queued: bool = False
    backfill: bool = False


def probe(engine: Engine, *, server_time: bool, extra: ColumnElement[bool] | None = None) -> Probe:
    """The pass's first look (see ``Probe``): one SELECT of index probes. On PostgreSQL it
    runs outside any transaction (autocommit: no BEGIN and no COMMIT round trips); on
    SQLite, whose engine manages its own transactions, in a read that is rolled back.
    Reading ``statement_timestamp()`` needs PostgreSQL (``server_time``). Unlike the
    other functions here it takes the engine and opens its own connection."""
    try:
        statement = (
            _probe_statement(server_time) if extra is None else _build_probe(server_time, extra)
        )
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            row = connection.execute(statement).one()
    except sa_exc.SQLAlchemyError as exc:
        raise database_error(exc) from exc
    return Probe(
        server_now=stored_utc(row[5]) if server_time else None,
        earliest=None if row[0] is None else stored_utc(row[0]),
        uninitialised=bool(row[1]),
        oldest_unsent=None if row[2] is None else stored_utc(row[2]),
        queued=bool(row[3]),
        backfill=bool(row[4]),
    )


@functools.cache
def _probe_statement(server_time: bool) -> Select[Any]:
    # Built once: constructing the statement and its cache key was most of an idle
    # pass's CPU. A host's claim filter differs per call, so its probe is built anew.
    return _build_probe(server_time, None)


def _build_probe(server_time: bool, extra: ColumnElement[bool] | None) -> Select[Any]:
    e = _executions.c
    earliest = select(func.min(ScheduledTask.next_run_at)).where(*_active(extra))
    fresh = select(ScheduledTask.id).where(
        ScheduledTask.next_run_at.is_(None),
        ScheduledTask.status == _literal(TaskStatus.ACTIVE),
        ScheduledTask.task_type.in_([_literal(task_type) for task_type in DUE_TYPES]),
    )
    if extra is not None:
        fresh = fresh.where(extra)
    unsent = select(func.min(e.created_at)).where(*unsent_slots())
    if extra is not None:
        mine = select(ScheduledTask.id).where(ScheduledTask.id == e.scheduled_task_id, extra)
        unsent = unsent.where(or_(e.scheduled_task_id.is_(None), mine.exists()))
    # one probe of each partial index (models.WAITING_PREDICATE, BACKFILL_PREDICATE)
    waiting = e.status == _literal(ExecutionStatus.QUEUED)
    queued = select(e.id).where(waiting, e.trigger != _literal(ExecutionTrigger.BACKFILL))
    backfill = select(e.id).where(waiting, e.trigger == _literal(ExecutionTrigger.BACKFILL))
    columns: list[Any] = [
        earliest.scalar_subquery(),
        fresh.exists(),
        unsent.scalar_subquery(),
        queued.exists(),
        backfill.exists(),
    ]
    if server_time:
        columns.append(func.statement_timestamp())
    return select(*columns)


def claimed_slots(plans: Sequence[RowPlan], inserted: Mapping[str, int]) -> list[ClaimedSlot]:
    """The ``pending`` slots of ``plans`` that ``insert_slots`` inserted, ready to send
    (not the ``queued`` ones: the sweep sends those in turn); a slot missing from
    ``inserted`` belongs to whoever claimed it first."""
    return [
        claimed_run(
            inserted[slot.celery_task_id],
            slot.celery_task_id,
            schedule=plan.row,
            task_name=slot.task_name,
            scheduled_for=slot.scheduled_for,
            kwargs=slot.kwargs,
        )
        for plan in plans
        for slot in plan.slots
        if slot.status is ExecutionStatus.PENDING and slot.celery_task_id in inserted
    ]


class _Routed(Protocol):
    """What a slot takes from its schedule (a ``ScheduledTask`` or a swept row)."""

    @property
    def id(self) -> int | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def expire_seconds(self) -> int | None: ...
    @property
    def overlap_policy(self) -> str | None: ...


def claimed_run(
    execution_id: int,
    celery_task_id: str,
    *,
    schedule: _Routed | None,
    task_name: str,
    scheduled_for: datetime | None,
    kwargs: dict[str, Any],
    trigger: ExecutionTrigger = ExecutionTrigger.SCHEDULE,
    claimed_at: datetime | None = None,
    resend: bool = False,
) -> ClaimedSlot:
    """The one place a ``ClaimedSlot`` is built: the run and its schedule's routing
    (a claimed slot, a swept one, or a manual run, which has no slot and maybe no
    schedule)."""
    return ClaimedSlot(
        execution_id=execution_id,
        celery_task_id=celery_task_id,
        scheduled_task_id=None if schedule is None else schedule.id,
        schedule_name=None if schedule is None else schedule.name,
        task_name=task_name,
        scheduled_for=scheduled_for,
        kwargs=kwargs,
        queue=None if schedule is None else schedule.queue,
        priority=None if schedule is None else schedule.priority,
        expire_seconds=None if schedule is None else schedule.expire_seconds,
        overlap_policy=None if schedule is None else _policy(schedule.overlap_policy),
        trigger=trigger,
        claimed_at=claimed_at,
        resend=resend,
    )


def earliest_next_run(
    session: Session, *, extra: ColumnElement[bool] | None = None
) -> datetime | None:
    """The earliest ``next_run_at`` of the active rows (one index probe), or None."""
    query = select(func.min(ScheduledTask.next_run_at)).where(*_active(extra))
    earliest: datetime | None = session.scalar(query)
    return earliest


def count_active(session: Session) -> int:
    """How many schedules are active (for the beat banner)."""
    query = (
        select(func.count()).select_from(_schedules).where(_schedules.c.status == TaskStatus.ACTIVE)
    )
    return int(session.scalar(query) or 0)


def _policy(value: str | None) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
