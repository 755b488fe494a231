"""The demo's example tasks and schedules: registered and created once, firing soon."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.enums import TaskType
from dataforge_scheduler.demo.tasks import (
    HEARTBEAT_SECONDS,
    HEARTBEAT_TASK,
    REPORT_TASK,
    ensure_demo_schedules,
    register_demo_tasks,
)
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import create_all

START = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'demo.db'}",
        redis_url="memory://",
        celery_broker_url="memory://",
        celery_result_backend="cache+memory://",
    )
    rt = Runtime(settings, registry=TaskRegistry(), clock=ManualClock(START))
    create_all(rt.engine)
    yield rt
    rt.close()


def test_schedules_are_created_once_by_name(runtime: Runtime) -> None:
    assert ensure_demo_schedules(runtime) == [HEARTBEAT_TASK, REPORT_TASK]
    assert ensure_demo_schedules(runtime) == []
    with runtime.session() as session:
        assert len(store.list_schedules(session).items) == 2


def test_the_first_heartbeat_comes_a_second_after_start(runtime: Runtime) -> None:
    ensure_demo_schedules(runtime)
    with runtime.session() as session:
        heartbeat = store.get_schedule_by_name(session, HEARTBEAT_TASK)
        report = store.get_schedule_by_name(session, REPORT_TASK)
    assert heartbeat.task_type is TaskType.INTERVAL
    assert heartbeat.interval_seconds == HEARTBEAT_SECONDS
    assert heartbeat.next_run_at == START + timedelta(seconds=1)
    assert report.task_type is TaskType.CRON
    assert report.cron_expression == "* * * * *"
    assert report.next_run_at == datetime(2026, 3, 1, 12, 1, tzinfo=UTC)


def test_tasks_are_registered_and_described() -> None:
    app = Celery("demo-test", set_as_current=False)
    registry = TaskRegistry()
    register_demo_tasks(app, registry)
    register_demo_tasks(app, registry)  # idempotent
    assert registry.names() == [HEARTBEAT_TASK, REPORT_TASK]
    assert {HEARTBEAT_TASK, REPORT_TASK} <= set(app.tasks)
    assert {registry.get(name).category for name in registry.names()} == {"demo"}
    assert registry.validate_kwargs(HEARTBEAT_TASK, {}) == {"greeting": "hello"}
