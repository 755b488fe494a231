"""The overlap policies ``buffer_one`` and ``cancel_other``.

Revision ID: 9b1e5d3c7a20
Revises: 4f2a9c1d7b3e
Create Date: 2026-12-04

``scheduled_tasks.overlap_policy`` may now also be ``buffer_one`` (a slot that finds a run
of its schedule going waits for it, at most one waits) or ``cancel_other`` (the run going
is revoked and the slot runs after it). Downgrading turns both back into ``skip``, the
policy that keeps a schedule from overlapping itself without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b1e5d3c7a20"
down_revision: str | Sequence[str] | None = "4f2a9c1d7b3e"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

TABLE = "scheduled_tasks"
COLUMN = "overlap_policy"
POLICIES_BEFORE = ("skip", "allow")
POLICIES_AFTER = ("skip", "allow", "buffer_one", "cancel_other")


def _policy_check(values: Sequence[str]) -> None:
    name = op.f(f"ck_{TABLE}_{COLUMN}")
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table
        batch.drop_constraint(name, type_="check")
        # an expression, as the models write it, so the SQL is the same
        batch.create_check_constraint(name, sa.column(COLUMN, sa.String).in_(list(values)))


def upgrade() -> None:
    _policy_check(POLICIES_AFTER)


def downgrade() -> None:
    op.execute(
        f"UPDATE {TABLE} SET {COLUMN} = 'skip' WHERE {COLUMN} IN ('buffer_one', 'cancel_other')"
    )
    _policy_check(POLICIES_BEFORE)
