"""The scheduler test harness: a ``DatabaseScheduler`` on an engine, a ``ManualClock``,
the pytest plugin's recording dispatcher and a Celery app that registers ``RECORD``.

Shared by the scheduler tests in ``tests/unit`` (SQLite) and ``tests/integration``
(PostgreSQL and SQLite).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from celery import Celery

from dataforge_scheduler.celery.beat import DatabaseScheduler, PassResult
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution
from dataforge_scheduler.testing import RecordingDispatcher

__all__ = ["RECORD", "SEED_INSERT", "T0", "Harness", "seconds"]

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, on the minute
RECORD = "scheduler_unit.record"
SEED_INSERT = """\
INSERT INTO scheduled_tasks (name, description, task_type, task_name, interval_seconds, handler_kwargs, status)
VALUES ('sync_accounts_hourly', '每小时同步账号', 'interval', 'dataforge.sync_accounts', 3600, '{}', 'active');
"""  # noqa: E501 - the seed's statement, byte for byte


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


class Harness:
    """A scheduler on ``engine`` with a ManualClock, a recording dispatcher and a Celery
    app that registers ``RECORD`` (not shared: other test modules' apps never see it)."""

    def __init__(
        self,
        engine: Any,
        *,
        scheduler_cls: type[DatabaseScheduler] = DatabaseScheduler,
        start: datetime = T0,
        **settings: Any,
    ) -> None:
        self.clock = ManualClock(start)
        self.settings = Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            redis_url="memory://",
            celery_broker_url="memory://",
            celery_result_backend="cache+memory://",
            **settings,
        )
        self.runtime = Runtime(
            self.settings, engine=engine, clock=self.clock, registry=TaskRegistry()
        )
        self.app = Celery("scheduler-unit", set_as_current=False)
        # a DataForgeTask: its runs take the schedule's lock, so a backlog is planned
        # not to race itself (the harness never runs it: the dispatcher records)
        self.app.task(name=RECORD, shared=False, base=DataForgeTask)(_record)
        self.dispatcher = RecordingDispatcher()
        self._names = itertools.count(1)
        self.scheduler_cls = scheduler_cls
        self.scheduler = self.new_scheduler()

    def new_scheduler(self, **kwargs: Any) -> DatabaseScheduler:
        scheduler = self.scheduler_cls(
            self.app, runtime=self.runtime, dispatcher=self.dispatcher, **kwargs
        )
        # no worker here: a sent slot never starts, so none may hold the next one back
        # (a test of that rule sets it)
        scheduler.unstarted_wait_seconds = 0
        return scheduler

    def create(self, **fields: Any) -> int:
        fields.setdefault("task_name", RECORD)
        fields.setdefault("name", f"schedule-{next(self._names)}")
        with self.runtime.session() as session:
            row = store.create_schedule(
                session, fields, now=self.clock.now(), default_timezone="UTC"
            )
            return row.id

    def at(self, when: datetime) -> PassResult:
        self.clock.set(when)
        return self.scheduler.run_pass()

    def schedule(self, schedule_id: int) -> ScheduledTask:
        with self.runtime.session() as session:
            return store.get_schedule(session, schedule_id)

    def schedule_by_name(self, name: str) -> ScheduledTask:
        with self.runtime.session() as session:
            return store.get_schedule_by_name(session, name)

    def executions(self, schedule_id: int | None = None) -> list[TaskExecution]:
        query = sa.select(TaskExecution).order_by(TaskExecution.scheduled_for, TaskExecution.id)
        if schedule_id is not None:
            query = query.where(TaskExecution.scheduled_task_id == schedule_id)
        with self.runtime.session() as session:
            return list(session.scalars(query))

    def sql(self, statement: str, **params: Any) -> None:
        with self.runtime.engine.begin() as connection:
            connection.execute(sa.text(statement), params)


def _record(**kwargs: Any) -> dict[str, Any]:
    return kwargs
