"""The seed's own INSERT runs verbatim and every column it leaves out gets its default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from dataforge_scheduler.core.enums import MisfirePolicy, OverlapPolicy, TaskStatus, TaskType
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.store import compute_next_run

SEED_INSERT = """\
INSERT INTO scheduled_tasks (name, description, task_type, task_name, interval_seconds, handler_kwargs, status)
VALUES ('sync_accounts_hourly', '每小时同步账号', 'interval', 'dataforge.sync_accounts', 3600, '{}', 'active');
"""  # noqa: E501 - the seed's statement, byte for byte


def test_seed_insert_runs_verbatim_and_fills_every_default(engine: Any) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    with engine.begin() as connection:
        connection.execute(sa.text(SEED_INSERT))

    with make_session_factory(engine)() as session:
        row = session.scalars(sa.select(ScheduledTask)).one()

    assert row.id == 1
    assert row.name == "sync_accounts_hourly"
    assert row.description == "每小时同步账号"
    assert row.task_type is TaskType.INTERVAL
    assert row.task_name == "dataforge.sync_accounts"
    assert row.interval_seconds == 3600
    assert row.handler_kwargs == {}
    assert row.status is TaskStatus.ACTIVE
    assert row.is_system is False
    assert row.misfire_policy is MisfirePolicy.RUN_ONCE
    assert row.overlap_policy is OverlapPolicy.SKIP
    assert (row.run_count, row.success_count, row.failure_count) == (0, 0, 0)
    assert row.total_runtime_ms == 0
    assert row.version == 1
    assert row.next_run_at is None
    assert row.last_run_at is None
    assert row.last_status is None
    assert row.timezone is None
    assert row.created_at.tzinfo is UTC
    assert row.updated_at.tzinfo is UTC
    assert before <= row.created_at <= datetime.now(UTC) + timedelta(seconds=5)


def test_a_seeded_row_gets_its_first_fire_on_the_created_at_grid(engine: Any) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(SEED_INSERT))

    with make_session_factory(engine)() as session:
        row = session.scalars(sa.select(ScheduledTask)).one()
        now = row.created_at + timedelta(minutes=90)
        upcoming = compute_next_run(row, now=now, default_timezone="Asia/Shanghai")

    assert upcoming == row.created_at + timedelta(hours=2)
