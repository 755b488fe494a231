"""Range checks on scheduled_tasks, and (PostgreSQL) a NOTIFY on every schedule change.

Revision ID: 4f2a9c1d7b3e
Revises: 68a81dc8dc1a
Create Date: 2026-12-04

``misfire_grace_seconds`` may not be negative, ``expire_seconds`` must be positive and
``priority`` within 0-255: the ranges the API already enforced, now refused for raw SQL
too. A database holding rows outside them is not changed behind the operator's back: the
upgrade stops first and names the rows and the statement that fixes them.

On PostgreSQL, the trigger ``scheduled_tasks_changed`` calls ``pg_notify`` on the channel
``dataforge_schedules_changed`` after an insert, a delete, or an update of a column that
decides when or what a schedule fires (not its counters), so every beat, which
``LISTEN``s, sees a change made by raw SQL within a second. The DDL is written out here,
not imported from the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "4f2a9c1d7b3e"
down_revision: str | Sequence[str] | None = "68a81dc8dc1a"
branch_labels: str | Sequence[str] | None = None  # on the "dataforge" branch, by descent
depends_on: str | Sequence[str] | None = None

TABLE = "scheduled_tasks"
CHECKS = {
    "misfire_grace_non_negative": "misfire_grace_seconds IS NULL OR misfire_grace_seconds >= 0",
    "expire_positive": "expire_seconds IS NULL OR expire_seconds > 0",
    "priority_range": "priority IS NULL OR (priority >= 0 AND priority <= 255)",
}
FIXES = {
    "misfire_grace_non_negative": "UPDATE scheduled_tasks SET misfire_grace_seconds = NULL "
    "WHERE misfire_grace_seconds < 0",
    "expire_positive": "UPDATE scheduled_tasks SET expire_seconds = NULL WHERE expire_seconds <= 0",
    "priority_range": "UPDATE scheduled_tasks SET priority = NULL "
    "WHERE priority < 0 OR priority > 255",
}
CHANNEL = "dataforge_schedules_changed"
FUNCTION = f"""
CREATE OR REPLACE FUNCTION dataforge_schedules_changed() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', '');
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
TRIGGER = """
CREATE TRIGGER scheduled_tasks_changed
AFTER INSERT OR DELETE OR UPDATE OF task_type, task_name, cron_expression, interval_seconds,
  run_at, timezone, handler_kwargs, status, queue, priority, expire_seconds, start_at,
  end_at, misfire_policy, misfire_grace_seconds, overlap_policy, next_run_at
ON scheduled_tasks FOR EACH ROW EXECUTE FUNCTION dataforge_schedules_changed()
"""


def _refuse_rows_out_of_range() -> None:
    if context.is_offline_mode():  # printing SQL: there are no rows to look at
        return
    connection = op.get_bind()
    problems = []
    for name, condition in CHECKS.items():
        bad = connection.execute(
            sa.text(f"SELECT id FROM {TABLE} WHERE NOT ({condition}) ORDER BY id LIMIT 20")
        ).scalars()
        ids = list(bad)
        if ids:
            problems.append(f"{name}: rows {ids} (fix with: {FIXES[name]})")
    if problems:
        raise RuntimeError(
            "scheduled_tasks has rows outside the ranges this revision enforces; fix them "
            "and upgrade again: " + "; ".join(problems)
        )


def upgrade() -> None:
    _refuse_rows_out_of_range()
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table
        for name, condition in CHECKS.items():
            batch.create_check_constraint(op.f(f"ck_{TABLE}_{name}"), sa.text(condition))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)
        op.execute("DROP TRIGGER IF EXISTS scheduled_tasks_changed ON scheduled_tasks")
        op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS scheduled_tasks_changed ON scheduled_tasks")
        op.execute("DROP FUNCTION IF EXISTS dataforge_schedules_changed()")
    with op.batch_alter_table(TABLE) as batch:
        for name in reversed(list(CHECKS)):
            batch.drop_constraint(op.f(f"ck_{TABLE}_{name}"), type_="check")
