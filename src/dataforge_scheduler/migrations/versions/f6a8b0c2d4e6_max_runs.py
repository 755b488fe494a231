"""Limits: ``scheduled_tasks.max_runs``, the scheduled runs a schedule has left.

Revision ID: f6a8b0c2d4e6
Revises: e5f7a9b1c3d5
Create Date: 2026-12-04

``max_runs`` is nullable (no limit, as every existing row), and never below 0: each slot
a scheduler claims to run takes one, and the schedule completes when none is left.
Downgrading drops the column; schedules it completed stay completed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f6a8b0c2d4e6"
down_revision: str | Sequence[str] | None = "e5f7a9b1c3d5"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

TABLE = "scheduled_tasks"
CHECK = "max_runs_non_negative"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table
        batch.add_column(sa.Column("max_runs", sa.Integer(), nullable=True))
        batch.create_check_constraint(
            op.f(f"ck_{TABLE}_{CHECK}"), "max_runs IS NULL OR max_runs >= 0"
        )


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(f"ck_{TABLE}_{CHECK}"), type_="check")
        batch.drop_column("max_runs")
