"""The database's own schedule-change notices (PostgreSQL ``LISTEN``/``NOTIFY``): the
trigger ``create_all`` installs announces a change to when or what a schedule fires,
whoever made it, and stays quiet for the counters every run updates."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import create_all

pytestmark = pytest.mark.postgres


def _sql(engine: Any, statement: str) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(statement))


def _schedule(engine: Any) -> int:
    with make_session_factory(engine).begin() as session:
        return store.create_schedule(
            session,
            {"name": "watched", "task_type": "interval", "task_name": "x", "interval_seconds": 60},
            now=utcnow() - timedelta(hours=1),
            default_timezone="UTC",
        ).id


def test_a_raw_change_is_announced_and_a_counter_update_is_not(pg: Any) -> None:
    create_all(pg)  # again: installing the trigger is idempotent
    schedule_id = _schedule(pg)
    listener = store.listen_for_changes(pg)
    assert listener is not None
    with listener:
        assert listener.wait(0) is False  # nothing yet, and it does not block
        _sql(pg, f"UPDATE scheduled_tasks SET run_count = run_count + 1 WHERE id = {schedule_id}")
        assert listener.wait(0.3) is False
        # several changes in one transaction, or a burst: one wake-up
        with pg.begin() as connection:
            for _ in range(3):
                connection.execute(
                    sa.text(
                        f"UPDATE scheduled_tasks SET next_run_at = now() WHERE id = {schedule_id}"
                    )
                )
        _sql(pg, f"UPDATE scheduled_tasks SET status = 'paused' WHERE id = {schedule_id}")
        assert listener.wait(2.0) is True
        assert listener.wait(0.2) is False  # the burst was consumed by the first wait
        _sql(pg, f"DELETE FROM scheduled_tasks WHERE id = {schedule_id}")
        assert listener.wait(2.0) is True
    assert listener.wait(0) is False  # closed


def test_sqlite_has_no_database_notices(sqlite_engine: Any) -> None:
    assert store.listen_for_changes(sqlite_engine) is None


def test_listening_on_an_unreachable_database_says_so() -> None:
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(Exception, match="unavailable to listen"):
            store.listen_for_changes(engine)
    finally:
        engine.dispose()


def test_a_run_ending_is_quiet_unless_it_pauses_its_schedule(pg: Any) -> None:
    from dataforge_scheduler.core.enums import ExecutionStatus, TaskStatus
    from dataforge_scheduler.sql.models import ScheduledTask

    schedule_id = _schedule(pg)
    _sql(pg, f"UPDATE scheduled_tasks SET pause_after_failures = 2 WHERE id = {schedule_id}")
    factory = make_session_factory(pg)
    listener = store.listen_for_changes(pg)
    assert listener is not None

    def run(number: int, status: ExecutionStatus) -> None:
        with factory.begin() as session:
            store.start_run(
                session,
                celery_task_id=f"n{number}",
                task_name="x",
                scheduled_task_id=schedule_id,
                trigger="schedule",
                worker_hostname="w",
                worker_pid=1,
                kwargs={},
                retries=0,
                now=utcnow(),
            )
            store.finish_run(
                session, celery_task_id=f"n{number}", status=status, now=utcnow(), error="e"
            )

    with listener:
        run(1, ExecutionStatus.SUCCESS)
        run(2, ExecutionStatus.FAILED)
        assert listener.wait(0.3) is False, "counters and streak: no wake-up"
        run(3, ExecutionStatus.FAILED)
        assert listener.wait(2.0) is True, "the automatic pause wakes the beats"
    with factory() as session:
        row = session.get(ScheduledTask, schedule_id)
        assert row is not None
        assert row.status is TaskStatus.PAUSED
