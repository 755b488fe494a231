"""Partial indexes for the scheduler's unsent-slot sweep and first-run scan.

Revision ID: 68a81dc8dc1a
Revises: c041e8969ef2
Create Date: 2026-12-05

``ix_task_executions_unsent`` holds only the claimed slots not yet sent and
``ix_scheduled_tasks_uninitialised`` only the active, scheduler-fired rows with no
``next_run_at`` yet, so the two look-ups a scheduler runs every pass stop scanning the
tables. The predicates use literals, as the queries in ``sql.claims`` do: PostgreSQL
matches a partial index against a generic plan's constants, never its parameters. Like
every revision, the predicates are written out here, not imported from the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "68a81dc8dc1a"
down_revision: str | Sequence[str] | None = "c041e8969ef2"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

UNINITIALISED = (
    "next_run_at IS NULL AND status = 'active' AND task_type IN ('cron', 'interval', 'date')"
)
UNSENT = "status = 'pending' AND sent_at IS NULL"


def _create_partial(name: str, table: str, column: str, predicate: str) -> None:
    where = sa.text(predicate)
    op.create_index(op.f(name), table, [column], postgresql_where=where, sqlite_where=where)


def upgrade() -> None:
    _create_partial("ix_task_executions_unsent", "task_executions", "created_at", UNSENT)
    _create_partial("ix_scheduled_tasks_uninitialised", "scheduled_tasks", "id", UNINITIALISED)


def downgrade() -> None:
    op.drop_index(op.f("ix_scheduled_tasks_uninitialised"), table_name="scheduled_tasks")
    op.drop_index(op.f("ix_task_executions_unsent"), table_name="task_executions")
