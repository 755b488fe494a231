"""Backfill: the run trigger ``backfill`` and the audit action ``backfill``.

Revision ID: b8c0d2e4f6a8
Revises: a7b9c1d3e5f7
Create Date: 2026-12-05

``task_executions.trigger`` may now also be ``backfill`` (a past slot a backfill asked
for, ``POST /tasks/{id}/backfill``) and ``audit_log.action`` may be ``backfill``. Two
partial indexes split the ``queued`` slots: ``ix_task_executions_backfill`` (a
backfill's, by schedule and slot: the beat finds each schedule's next one by index
probes) and ``ix_task_executions_waiting`` (the scheduler's own, which its sweep reads
without passing over a backfill's thousands). The predicates use literals, as the
queries do. No column changes, so every existing INSERT still works. Downgrading drops
the indexes, revokes the backfill slots still waiting, keeps the others as the scheduled
slots they stand for (trigger ``schedule``) and deletes the audit rows of backfills,
which the older schema cannot hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8c0d2e4f6a8"
down_revision: str | Sequence[str] | None = "a7b9c1d3e5f7"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

RUNS = "task_executions"
AUDIT = "audit_log"
TRIGGERS_BEFORE = ("schedule", "manual", "retry", "external")
TRIGGERS_AFTER = (*TRIGGERS_BEFORE, "backfill")
ACTIONS_BEFORE = (
    "create",
    "update",
    "delete",
    "run",
    "pause",
    "resume",
    "release_lock",
    "cancel",
    "rerun",
)
ACTIONS_AFTER = (*ACTIONS_BEFORE, "backfill")
BACKFILL = "status = 'queued' AND \"trigger\" = 'backfill'"
WAITING = "status = 'queued' AND \"trigger\" <> 'backfill'"


def _check(table: str, column: str, values: Sequence[str]) -> None:
    name = op.f(f"ck_{table}_{column}")
    with op.batch_alter_table(table) as batch:  # SQLite rebuilds the table
        batch.drop_constraint(name, type_="check")
        # an expression, as the models write it, so the SQL is the same ("trigger" quoted)
        batch.create_check_constraint(name, sa.column(column, sa.String).in_(list(values)))


def _create_partial(name: str, columns: list[str], predicate: str) -> None:
    where = sa.text(predicate)
    op.create_index(op.f(name), RUNS, columns, postgresql_where=where, sqlite_where=where)


def upgrade() -> None:
    _check(RUNS, "trigger", TRIGGERS_AFTER)
    _check(AUDIT, "action", ACTIONS_AFTER)
    _create_partial("ix_task_executions_backfill", ["scheduled_task_id", "scheduled_for"], BACKFILL)
    _create_partial("ix_task_executions_waiting", ["scheduled_task_id"], WAITING)


def downgrade() -> None:
    op.drop_index(op.f("ix_task_executions_waiting"), table_name=RUNS)
    op.drop_index(op.f("ix_task_executions_backfill"), table_name=RUNS)
    op.execute(
        f"UPDATE {RUNS} SET status = 'revoked', finished_at = CURRENT_TIMESTAMP, "
        "error = 'revoked: a schema downgrade dropped the backfill this slot waited in' "
        "WHERE \"trigger\" = 'backfill' AND status = 'queued'"
    )
    op.execute(f"UPDATE {RUNS} SET \"trigger\" = 'schedule' WHERE \"trigger\" = 'backfill'")
    op.execute(f"DELETE FROM {AUDIT} WHERE action = 'backfill'")
    _check(AUDIT, "action", ACTIONS_BEFORE)
    _check(RUNS, "trigger", TRIGGERS_BEFORE)
