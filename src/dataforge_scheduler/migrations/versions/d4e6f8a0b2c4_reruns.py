"""Reruns: ``task_executions.rerun_of`` and the audit action ``rerun``.

Revision ID: d4e6f8a0b2c4
Revises: b3c5d7e9f1a2
Create Date: 2026-12-04

A run started again from an earlier one (``POST /executions/{id}/rerun``) points at it
through ``rerun_of`` (nullable, so every existing INSERT still works; ``ON DELETE SET
NULL``, so purging old history never deletes a rerun). A partial index finds the reruns
of a run. ``audit_log.action`` may now also be ``rerun``. Downgrading drops the column
and deletes the audit rows of reruns, which the older schema cannot hold; the reruns
themselves stay, as manual runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4e6f8a0b2c4"
down_revision: str | Sequence[str] | None = "b3c5d7e9f1a2"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

RUNS = "task_executions"
AUDIT = "audit_log"
ACTIONS_BEFORE = ("create", "update", "delete", "run", "pause", "resume", "release_lock", "cancel")
ACTIONS_AFTER = (*ACTIONS_BEFORE, "rerun")
PREDICATE = "rerun_of IS NOT NULL"


def _action_check(values: Sequence[str]) -> None:
    name = op.f(f"ck_{AUDIT}_action")
    with op.batch_alter_table(AUDIT) as batch:  # SQLite rebuilds the table
        batch.drop_constraint(name, type_="check")
        batch.create_check_constraint(name, sa.column("action", sa.String).in_(list(values)))


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    with op.batch_alter_table(RUNS) as batch:
        batch.add_column(sa.Column("rerun_of", id_type, nullable=True))
        batch.create_foreign_key(
            op.f(f"fk_{RUNS}_rerun_of_{RUNS}"), RUNS, ["rerun_of"], ["id"], ondelete="SET NULL"
        )
    where = sa.text(PREDICATE)
    op.create_index(
        op.f(f"ix_{RUNS}_rerun_of"),
        RUNS,
        ["rerun_of"],
        postgresql_where=where,
        sqlite_where=where,
    )
    _action_check(ACTIONS_AFTER)


def downgrade() -> None:
    op.execute(f"DELETE FROM {AUDIT} WHERE action = 'rerun'")
    _action_check(ACTIONS_BEFORE)
    op.drop_index(op.f(f"ix_{RUNS}_rerun_of"), table_name=RUNS)
    with op.batch_alter_table(RUNS) as batch:
        batch.drop_constraint(op.f(f"fk_{RUNS}_rerun_of_{RUNS}"), type_="foreignkey")
        batch.drop_column("rerun_of")
