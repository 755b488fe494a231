"""Initial schema: scheduled_tasks, task_executions and audit_log.

Revision ID: c041e8969ef2
Revises:
Create Date: 2026-11-28

The tables exactly as ``dataforge_scheduler.metadata`` declares them in 0.1: columns,
server defaults (so raw SQL such as the seed's INSERT keeps working), CHECK constraints
on every closed vocabulary, indexes and the foreign key, all named by the library's
naming convention. The value lists and types are written out here, not imported: a
revision is a frozen picture, and later changes to the enums get their own revisions.
Every name goes through ``op.f()`` so a host environment's own naming convention never
renames them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c041e8969ef2"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("dataforge",)
depends_on: str | Sequence[str] | None = None

# BIGINT identity on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STAMP = sa.DateTime(timezone=True)

TASK_TYPES = ("cron", "interval", "date", "manual")
TASK_STATUSES = ("active", "paused", "completed", "disabled")
MISFIRE_POLICIES = ("run_once", "skip", "catch_up")
OVERLAP_POLICIES = ("skip", "allow")
EXECUTION_STATUSES = (
    "pending",
    "running",
    "success",
    "failed",
    "retrying",
    "skipped",
    "lost",
    "revoked",
)
EXECUTION_TRIGGERS = ("schedule", "manual", "retry", "external")
AUDIT_ACTIONS = ("create", "update", "delete", "run", "pause", "resume", "release_lock")


def _one_of(table: str, name: str, values: Sequence[str]) -> sa.CheckConstraint:
    # an expression, not text, so a keyword column name ("trigger") is quoted where needed
    expression = sa.column(name, sa.String).in_(list(values))
    return sa.CheckConstraint(expression, name=op.f(f"ck_{table}_{name}"))


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def _create_scheduled_tasks() -> None:
    t = "scheduled_tasks"
    op.create_table(
        t,
        sa.Column("id", ID, sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("task_type", sa.String(16), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("cron_expression", sa.String(255), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("run_at", STAMP, nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("handler_kwargs", JSON, server_default="{}", nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("is_system", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("queue", sa.String(200), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("expire_seconds", sa.Integer(), nullable=True),
        sa.Column("start_at", STAMP, nullable=True),
        sa.Column("end_at", STAMP, nullable=True),
        sa.Column("misfire_policy", sa.String(16), server_default="run_once", nullable=False),
        sa.Column("misfire_grace_seconds", sa.Integer(), nullable=True),
        sa.Column("overlap_policy", sa.String(16), server_default="skip", nullable=False),
        sa.Column("next_run_at", STAMP, nullable=True),
        sa.Column("last_run_at", STAMP, nullable=True),
        sa.Column("last_status", sa.String(16), nullable=True),
        sa.Column("last_execution_id", sa.BigInteger(), nullable=True),
        _counter("run_count"),
        _counter("success_count"),
        _counter("failure_count"),
        sa.Column("total_runtime_ms", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", STAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", STAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        _one_of(t, "task_type", TASK_TYPES),
        _one_of(t, "status", TASK_STATUSES),
        _one_of(t, "misfire_policy", MISFIRE_POLICIES),
        _one_of(t, "overlap_policy", OVERLAP_POLICIES),
        _one_of(t, "last_status", EXECUTION_STATUSES),
        sa.CheckConstraint(
            "interval_seconds IS NULL OR interval_seconds > 0",
            name=op.f("ck_scheduled_tasks_interval_positive"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_tasks")),
        sa.UniqueConstraint("name", name=op.f("uq_scheduled_tasks_name")),
    )
    op.create_index(op.f("ix_scheduled_tasks_due"), t, ["status", "next_run_at"])
    op.create_index(op.f("ix_scheduled_tasks_task_name"), t, ["task_name"])


def _create_task_executions() -> None:
    t = "task_executions"
    op.create_table(
        t,
        sa.Column("id", ID, sa.Identity(always=False), nullable=False),
        sa.Column("scheduled_task_id", ID, nullable=True),
        sa.Column("scheduled_for", STAMP, nullable=True),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("celery_task_id", sa.String(155), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("created_at", STAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", STAMP, nullable=True),
        sa.Column("started_at", STAMP, nullable=True),
        sa.Column("finished_at", STAMP, nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("worker_hostname", sa.String(255), nullable=True),
        sa.Column("worker_pid", sa.Integer(), nullable=True),
        _counter("retries"),
        sa.Column("kwargs", JSON, server_default="{}", nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("log_output", sa.Text(), nullable=True),
        _one_of(t, "trigger", EXECUTION_TRIGGERS),
        _one_of(t, "status", EXECUTION_STATUSES),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_executions")),
        sa.UniqueConstraint(
            "scheduled_task_id",
            "scheduled_for",
            name=op.f("uq_task_executions_scheduled_task_id_scheduled_for"),
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_task_id"],
            ["scheduled_tasks.id"],
            name=op.f("fk_task_executions_scheduled_task_id_scheduled_tasks"),
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("celery_task_id", name=op.f("uq_task_executions_celery_task_id")),
    )
    op.create_index(op.f("ix_task_executions_history"), t, ["scheduled_task_id", "created_at"])
    op.create_index(op.f("ix_task_executions_reaper"), t, ["status", "started_at"])
    op.create_index(op.f("ix_task_executions_created_at"), t, ["created_at"])


def _create_audit_log() -> None:
    t = "audit_log"
    op.create_table(
        t,
        sa.Column("id", ID, sa.Identity(always=False), nullable=False),
        sa.Column("at", STAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.BigInteger(), nullable=True),
        sa.Column("before", JSON, nullable=True),
        sa.Column("after", JSON, nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        _one_of(t, "action", AUDIT_ACTIONS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), t, ["at"])
    op.create_index(op.f("ix_audit_log_target"), t, ["target_type", "target_id"])


def upgrade() -> None:
    _create_scheduled_tasks()
    _create_task_executions()
    _create_audit_log()


def downgrade() -> None:
    # dropping a table drops its indexes and constraints with it
    op.drop_table("audit_log")
    op.drop_table("task_executions")
    op.drop_table("scheduled_tasks")
