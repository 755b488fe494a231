"""Pause rules: a pause's note, and pausing after consecutive failures.

Revision ID: e5f7a9b1c3d5
Revises: d4e6f8a0b2c4
Create Date: 2026-12-04

``scheduled_tasks`` gains ``pause_note`` (why it is paused), ``pause_after_failures``
(nullable, > 0: pause itself after that many failed or lost runs in a row) and
``failure_streak`` (NOT NULL, server default 0, so every existing INSERT still works).
Downgrading drops the three columns; schedules paused stay paused.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5f7a9b1c3d5"
down_revision: str | Sequence[str] | None = "d4e6f8a0b2c4"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

TABLE = "scheduled_tasks"
CHECK = "pause_after_failures_positive"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table
        batch.add_column(sa.Column("pause_note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pause_after_failures", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("failure_streak", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.create_check_constraint(
            op.f(f"ck_{TABLE}_{CHECK}"),
            "pause_after_failures IS NULL OR pause_after_failures > 0",
        )


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(f"ck_{TABLE}_{CHECK}"), type_="check")
        batch.drop_column("failure_streak")
        batch.drop_column("pause_after_failures")
        batch.drop_column("pause_note")
