"""The tables, ``scheduled_tasks``, ``task_executions`` and ``audit_log``, on one
``metadata``.

Every column a raw INSERT may leave out (the seed's own SQL among them) has a server-side
default or is nullable, and every closed vocabulary is guarded by a named CHECK
constraint built from ``core.enums``, so raw SQL and the ORM agree. Constraint and index
names follow ``NAMING_CONVENTION``, which keeps Alembic diffs stable.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Engine,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    column,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dataforge_scheduler.core.enums import (
    AuditAction,
    ExecutionStatus,
    ExecutionTrigger,
    MisfirePolicy,
    OverlapPolicy,
    TaskStatus,
    TaskType,
)
from dataforge_scheduler.sql.types import JSONType, StrEnumType, UTCDateTime

__all__ = [
    "BACKFILL_PREDICATE",
    "CHANGES_CHANNEL",
    "NAMING_CONVENTION",
    "RERUN_PREDICATE",
    "UNINITIALISED_PREDICATE",
    "UNSENT_PREDICATE",
    "WAITING_PREDICATE",
    "AuditEntry",
    "Base",
    "ScheduledTask",
    "TaskExecution",
    "create_all",
    "drop_all",
    "metadata",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# BIGINT identity on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")


# The predicates of the two partial indexes, written with literals: the queries in
# ``sql.store.claims`` spell out the same constants, so PostgreSQL's generic plans (psycopg
# prepares a statement after five runs) and SQLite's planner both match them.
_DUE_TYPE_VALUES = ", ".join(f"'{t.value}'" for t in TaskType if t is not TaskType.MANUAL)
UNINITIALISED_PREDICATE = (
    f"next_run_at IS NULL AND status = '{TaskStatus.ACTIVE.value}' "
    f"AND task_type IN ({_DUE_TYPE_VALUES})"
)
UNSENT_PREDICATE = f"status = '{ExecutionStatus.PENDING.value}' AND sent_at IS NULL"
RERUN_PREDICATE = "rerun_of IS NOT NULL"
_QUEUED = f"status = '{ExecutionStatus.QUEUED.value}'"
BACKFILL_PREDICATE = f"{_QUEUED} AND \"trigger\" = '{ExecutionTrigger.BACKFILL.value}'"
WAITING_PREDICATE = f"{_QUEUED} AND \"trigger\" <> '{ExecutionTrigger.BACKFILL.value}'"


def _partial(name: str, columns: str | tuple[str, ...], predicate: str) -> Index:
    where = text(predicate)
    names = (columns,) if isinstance(columns, str) else columns
    return Index(name, *names, postgresql_where=where, sqlite_where=where)


def _one_of(name: str, enum: type[StrEnum]) -> CheckConstraint:
    # an expression, not text, so a keyword column name ("trigger") is quoted where needed
    allowed = [member.value for member in enum]
    return CheckConstraint(column(name, String).in_(allowed), name=name)


def _counter() -> Mapped[int]:
    return mapped_column(Integer, nullable=False, server_default=text("0"))


class Base(DeclarativeBase):
    """Declarative base bound to the library's ``metadata``."""

    metadata = metadata


class ScheduledTask(Base):
    """One schedule: what to run (``task_name`` + ``handler_kwargs``) and when.

    ``next_run_at`` is written only by the store, under the row's lock (DESIGN.md, one
    writer per fact). The due lookup uses the plain composite index ``(status,
    next_run_at)`` rather than a partial one: psycopg prepares repeated statements and
    PostgreSQL cannot match a partial index's ``WHERE status = 'active'`` against a bound
    parameter in a generic plan, so a partial index would silently stop being used by
    the scheduler's per-tick query. The composite one serves it on both dialects. The
    first-run scan (rows inserted by raw SQL, ``next_run_at`` NULL) does use a partial
    index, ``ix_scheduled_tasks_uninitialised``: its query writes the predicate's
    constants as literals, which a generic plan can match.
    """

    __tablename__ = "scheduled_tasks"
    __table_args__ = (
        _one_of("task_type", TaskType),
        _one_of("status", TaskStatus),
        _one_of("misfire_policy", MisfirePolicy),
        _one_of("overlap_policy", OverlapPolicy),
        _one_of("last_status", ExecutionStatus),
        CheckConstraint(
            "interval_seconds IS NULL OR interval_seconds > 0", name="interval_positive"
        ),
        # the store's ranges (sql.store.fields), so raw SQL cannot store what the API refuses
        CheckConstraint(
            "misfire_grace_seconds IS NULL OR misfire_grace_seconds >= 0",
            name="misfire_grace_non_negative",
        ),
        CheckConstraint("expire_seconds IS NULL OR expire_seconds > 0", name="expire_positive"),
        CheckConstraint(
            "pause_after_failures IS NULL OR pause_after_failures > 0",
            name="pause_after_failures_positive",
        ),
        CheckConstraint("max_runs IS NULL OR max_runs >= 0", name="max_runs_non_negative"),
        CheckConstraint(
            "priority IS NULL OR (priority >= 0 AND priority <= 255)", name="priority_range"
        ),
        Index("ix_scheduled_tasks_due", "status", "next_run_at"),
        Index("ix_scheduled_tasks_task_name", "task_name"),
        _partial("ix_scheduled_tasks_uninitialised", "id", UNINITIALISED_PREDICATE),
    )
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy reads a plain dict

    id: Mapped[int] = mapped_column(_ID, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    task_type: Mapped[TaskType] = mapped_column(StrEnumType(TaskType), nullable=False)
    task_name: Mapped[str] = mapped_column(String(255), nullable=False)
    cron_expression: Mapped[str | None] = mapped_column(String(255))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str | None] = mapped_column(String(64))  # None: settings' celery_timezone
    handler_kwargs: Mapped[dict[str, Any]] = mapped_column(
        JSONType, nullable=False, server_default="{}"
    )
    status: Mapped[TaskStatus] = mapped_column(
        StrEnumType(TaskStatus), nullable=False, server_default=TaskStatus.ACTIVE.value
    )
    is_system: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    queue: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[int | None] = mapped_column(Integer)
    expire_seconds: Mapped[int | None] = mapped_column(Integer)
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    misfire_policy: Mapped[MisfirePolicy] = mapped_column(
        StrEnumType(MisfirePolicy), nullable=False, server_default=MisfirePolicy.RUN_ONCE.value
    )
    misfire_grace_seconds: Mapped[int | None] = mapped_column(Integer)  # None: settings
    overlap_policy: Mapped[OverlapPolicy] = mapped_column(
        StrEnumType(OverlapPolicy), nullable=False, server_default=OverlapPolicy.SKIP.value
    )
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[ExecutionStatus | None] = mapped_column(StrEnumType(ExecutionStatus))
    # no foreign key: task_executions already points here, and a cycle buys nothing
    last_execution_id: Mapped[int | None] = mapped_column(BigInteger)
    run_count: Mapped[int] = _counter()
    success_count: Mapped[int] = _counter()
    failure_count: Mapped[int] = _counter()
    total_runtime_ms: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, server_default=func.now(), onupdate=func.now()
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    # the last run's error when it failed or was lost (None after a success); last, as
    # the revision that added it put it
    last_error: Mapped[str | None] = mapped_column(Text)
    # why it is paused (the pause's note, or the automatic pause's reason); None when active
    pause_note: Mapped[str | None] = mapped_column(Text)
    # pause itself after this many failed or lost runs in a row (None: never)
    pause_after_failures: Mapped[int | None] = mapped_column(Integer)
    # failed or lost runs since the last success (or resume); kept by the workers
    failure_streak: Mapped[int] = _counter()
    # scheduled runs left (None: no limit); each slot claimed to run takes one, and the
    # schedule completes when none is left
    max_runs: Mapped[int | None] = mapped_column(Integer)
    # windows in which slots are not sent (core.exclusions); None: none
    exclusions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)

    def __repr__(self) -> str:
        return (
            f"<ScheduledTask id={self.id} name={self.name!r} {self.task_type} "
            f"task={self.task_name!r} status={self.status} next_run_at={self.next_run_at}>"
        )


class TaskExecution(Base):
    """One run of a task: a claimed slot, a manual run, a retry or an external call.

    History outlives its schedule: ``scheduled_task_id`` is ``ON DELETE SET NULL`` and
    the row keeps its own ``task_name``, so deleting a schedule never deletes runs.
    ``(scheduled_task_id, scheduled_for)`` is unique, which is how a scheduler claims a
    slot at most once; manual and external runs have ``scheduled_for`` NULL, and NULLs
    never conflict. ``ix_task_executions_unsent`` (partial, literal predicate) holds only
    the claimed slots not yet sent, for the scheduler's unsent-slot sweep;
    ``ix_task_executions_rerun_of`` (partial) finds the reruns of a run;
    ``ix_task_executions_backfill`` holds only a backfill's waiting slots and
    ``ix_task_executions_waiting`` only the other ``queued`` slots, so neither kind's
    look-up reads the other's.
    """

    __tablename__ = "task_executions"
    __table_args__ = (
        _one_of("trigger", ExecutionTrigger),
        _one_of("status", ExecutionStatus),
        UniqueConstraint("scheduled_task_id", "scheduled_for"),
        Index("ix_task_executions_history", "scheduled_task_id", "created_at"),
        Index("ix_task_executions_reaper", "status", "started_at"),
        Index("ix_task_executions_created_at", "created_at"),
        _partial("ix_task_executions_unsent", "created_at", UNSENT_PREDICATE),
        _partial("ix_task_executions_rerun_of", "rerun_of", RERUN_PREDICATE),
        _partial(
            "ix_task_executions_backfill",
            ("scheduled_task_id", "scheduled_for"),
            BACKFILL_PREDICATE,
        ),
        _partial("ix_task_executions_waiting", "scheduled_task_id", WAITING_PREDICATE),
    )
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy reads a plain dict

    id: Mapped[int] = mapped_column(_ID, Identity(), primary_key=True)
    scheduled_task_id: Mapped[int | None] = mapped_column(
        _ID, ForeignKey("scheduled_tasks.id", ondelete="SET NULL")
    )
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    task_name: Mapped[str] = mapped_column(String(255), nullable=False)
    celery_task_id: Mapped[str] = mapped_column(String(155), unique=True, nullable=False)
    trigger: Mapped[ExecutionTrigger] = mapped_column(StrEnumType(ExecutionTrigger), nullable=False)
    status: Mapped[ExecutionStatus] = mapped_column(
        StrEnumType(ExecutionStatus), nullable=False, server_default=ExecutionStatus.PENDING.value
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, server_default=func.now()
    )
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    worker_hostname: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    retries: Mapped[int] = _counter()
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, server_default="{}")
    result: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    log_output: Mapped[str | None] = mapped_column(Text)
    # the run this one runs again (``control.rerun``); cleared if that row is purged
    rerun_of: Mapped[int | None] = mapped_column(
        _ID, ForeignKey("task_executions.id", ondelete="SET NULL")
    )

    def __repr__(self) -> str:
        return (
            f"<TaskExecution id={self.id} task={self.task_name!r} "
            f"schedule={self.scheduled_task_id} status={self.status} "
            f"celery_task_id={self.celery_task_id!r}>"
        )


class AuditEntry(Base):
    """One change made through the API; ``before``/``after`` are JSON snapshots (None
    where absent). Append-only: the store inserts and reads, never updates or deletes."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint(
            column("action", String).in_([a.value for a in AuditAction]), name="action"
        ),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_target", "target_type", "target_id"),
    )
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy reads a plain dict

    id: Mapped[int] = mapped_column(_ID, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, server_default=func.now())
    principal: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    before: Mapped[Any] = mapped_column(JSONType, nullable=True)
    after: Mapped[Any] = mapped_column(JSONType, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return (
            f"<AuditEntry id={self.id} {self.action} {self.target_type}:{self.target_id} "
            f"by {self.principal!r} at {self.at}>"
        )


#: The PostgreSQL channel a change to ``scheduled_tasks`` is announced on (``NOTIFY``),
#: whoever made it: the API, a host's own code, or raw SQL. Every beat ``LISTEN``s.
CHANGES_CHANNEL = "dataforge_schedules_changed"

# One notice per transaction at most (PostgreSQL folds identical notices), and none for
# the updates that do not change when a schedule fires (its counters after each run).
# Like the migrations, the function and trigger are written out: ``create_all`` and
# ``init-db`` install them on PostgreSQL (idempotently), the Alembic revision that
# introduced them does the same, and ``drop_all`` removes them with the table.
CHANGES_TRIGGER_DDL = (
    f"""
CREATE OR REPLACE FUNCTION dataforge_schedules_changed() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('{CHANGES_CHANNEL}', '');
  RETURN NULL;
END
$$ LANGUAGE plpgsql
""",
    "DROP TRIGGER IF EXISTS scheduled_tasks_changed ON scheduled_tasks",
    """
CREATE TRIGGER scheduled_tasks_changed
AFTER INSERT OR DELETE OR UPDATE OF task_type, task_name, cron_expression, interval_seconds,
  run_at, timezone, handler_kwargs, status, queue, priority, expire_seconds, start_at,
  end_at, misfire_policy, misfire_grace_seconds, overlap_policy, next_run_at
ON scheduled_tasks FOR EACH ROW EXECUTE FUNCTION dataforge_schedules_changed()
""",
)
DROP_CHANGES_FUNCTION_DDL = "DROP FUNCTION IF EXISTS dataforge_schedules_changed()"


def create_all(engine: Engine) -> None:
    """Create the tables and indexes that do not exist yet, and (PostgreSQL) the trigger
    that announces schedule changes (safe to call again)."""
    metadata.create_all(engine, checkfirst=True)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            # concurrent CREATE OR REPLACE FUNCTION fails ("tuple concurrently updated")
            connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": CHANGES_CHANNEL}
            )
            for statement in CHANGES_TRIGGER_DDL:
                connection.execute(text(statement))


def drop_all(engine: Engine) -> None:
    """Drop the library's tables (those that exist), and the change trigger's function."""
    metadata.drop_all(engine, checkfirst=True)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text(DROP_CHANGES_FUNCTION_DDL))
