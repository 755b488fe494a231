"""The audit action ``cancel`` (a run cancelled through the API).

Revision ID: b3c5d7e9f1a2
Revises: 9b1e5d3c7a20
Create Date: 2026-12-04

``audit_log.action`` may now also be ``cancel``. Downgrading deletes the audit rows of
cancellations, which the older schema cannot hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3c5d7e9f1a2"
down_revision: str | Sequence[str] | None = "9b1e5d3c7a20"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

TABLE = "audit_log"
COLUMN = "action"
ACTIONS_BEFORE = ("create", "update", "delete", "run", "pause", "resume", "release_lock")
ACTIONS_AFTER = (*ACTIONS_BEFORE, "cancel")


def _action_check(values: Sequence[str]) -> None:
    name = op.f(f"ck_{TABLE}_{COLUMN}")
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table
        batch.drop_constraint(name, type_="check")
        # an expression, as the models write it, so the SQL is the same
        batch.create_check_constraint(name, sa.column(COLUMN, sa.String).in_(list(values)))


def upgrade() -> None:
    _action_check(ACTIONS_AFTER)


def downgrade() -> None:
    op.execute(f"DELETE FROM {TABLE} WHERE {COLUMN} = 'cancel'")
    _action_check(ACTIONS_BEFORE)
