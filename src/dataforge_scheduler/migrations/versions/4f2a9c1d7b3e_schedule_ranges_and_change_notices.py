"""Range checks, the ``missed`` run status, ``last_error``, and a NOTIFY on schedule changes.

Revision ID: 4f2a9c1d7b3e
Revises: 68a81dc8dc1a
Create Date: 2026-12-04

``misfire_grace_seconds`` may not be negative, ``expire_seconds`` must be positive and
``priority`` within 0-255: the ranges the API already enforced, now refused for raw SQL
too. A database holding rows outside them is not changed behind the operator's back: the
upgrade stops first and names the rows and the statement that fixes them.

A run may now be ``queued`` (claimed, waiting unsent for the run before it: a
``catch_up`` backlog) or ``missed`` (not sent, by the misfire policy; its ``error`` says
which rule), so the status checks of ``task_executions.status`` and
``scheduled_tasks.last_status`` admit them. ``scheduled_tasks.last_error`` keeps the last
run's error when it failed or was lost.

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
STATUSES_BEFORE = (
    "pending",
    "running",
    "success",
    "failed",
    "retrying",
    "skipped",
    "lost",
    "revoked",
)
STATUSES_AFTER = (
    "pending",
    "queued",
    "running",
    "success",
    "failed",
    "retrying",
    "skipped",
    "missed",
    "lost",
    "revoked",
)
#: (table, column) of the run-status checks
STATUS_CHECKS = (("task_executions", "status"), (TABLE, "last_status"))
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


def _status_checks(values: Sequence[str]) -> None:
    for table, column in STATUS_CHECKS:
        name = op.f(f"ck_{table}_{column}")
        with op.batch_alter_table(table) as batch:  # SQLite rebuilds the table
            batch.drop_constraint(name, type_="check")
            # an expression, as the models write it, so the SQL is the same
            batch.create_check_constraint(name, sa.column(column, sa.String).in_(list(values)))


def upgrade() -> None:
    _refuse_rows_out_of_range()
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table
        for name, condition in CHECKS.items():
            batch.create_check_constraint(op.f(f"ck_{TABLE}_{name}"), sa.text(condition))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
    _status_checks(STATUSES_AFTER)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)
        op.execute("DROP TRIGGER IF EXISTS scheduled_tasks_changed ON scheduled_tasks")
        op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS scheduled_tasks_changed ON scheduled_tasks")
        op.execute("DROP FUNCTION IF EXISTS dataforge_schedules_changed()")
    # a missed run is a run that did not happen: nothing to keep of it
    # (a queued one has not run yet: it becomes a pending slot, which the sweep re-sends)
    op.execute("DELETE FROM task_executions WHERE status = 'missed'")
    op.execute("UPDATE task_executions SET status = 'pending' WHERE status = 'queued'")
    op.execute(
        "UPDATE scheduled_tasks SET last_status = NULL WHERE last_status IN ('missed', 'queued')"
    )
    _status_checks(STATUSES_BEFORE)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("last_error")
        for name in reversed(list(CHECKS)):
            batch.drop_constraint(op.f(f"ck_{TABLE}_{name}"), type_="check")
