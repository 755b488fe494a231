"""Exclusions: ``scheduled_tasks.exclusions``, windows in which slots are not sent.

Revision ID: a7b9c1d3e5f7
Revises: f6a8b0c2d4e6
Create Date: 2026-12-04

A JSON list of windows (``core.exclusions``), nullable: every existing row has none.
Downgrading drops the column; slots the windows kept out come back at the next change.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a7b9c1d3e5f7"
down_revision: str | Sequence[str] | None = "f6a8b0c2d4e6"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

TABLE = "scheduled_tasks"
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table
        batch.add_column(sa.Column("exclusions", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("exclusions")
