"""A worker and a beat of ``apps.outage_app`` on real PostgreSQL and Redis, with the proof
file of the bodies that finished: what the overlap and run-control tests drive."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tests.integration.procs import CeleryProcess, service_env, wait_until

from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

APP = "tests.integration.apps.outage_app"
TASK = "ot.tick"
SCHEDULER = "dataforge_scheduler.celery.beat:DatabaseScheduler"
OPEN = {
    ExecutionStatus.PENDING,
    ExecutionStatus.QUEUED,
    ExecutionStatus.RUNNING,
    ExecutionStatus.RETRYING,
}


class Cluster:
    """A worker and a beat on one schedule; the proof file of bodies that finished."""

    def __init__(self, runtime: Runtime, env: dict[str, str], logs: Path) -> None:
        self.runtime = runtime
        self.env = env
        self.body_log = logs / "bodies.txt"
        self.worker = CeleryProcess(
            "worker", APP, env=env, log_path=logs / "worker.log", args=["-P", "prefork", "-c", "2"]
        )
        self.beat = CeleryProcess(
            "beat", APP, env=env, log_path=logs / "beat.log", args=["-S", SCHEDULER]
        )

    def schedule(self, **fields: Any) -> int:
        with self.runtime.session() as session:
            row = store.create_schedule(
                session,
                {"name": "overlapping", "task_type": "interval", "task_name": TASK, **fields},
                now=utcnow() - timedelta(seconds=0.5),
                default_timezone="UTC",
            )
            session.commit()
            return row.id

    def start(self) -> None:
        self.worker.start().wait_ready()
        self.beat.start().wait_ready()

    def rows(self) -> list[TaskExecution]:
        with self.runtime.session() as session:
            rows = list(
                session.scalars(sa.select(TaskExecution).order_by(TaskExecution.scheduled_for))
            )
            session.expunge_all()
        return rows

    def execution(self, execution_id: int) -> TaskExecution:
        with self.runtime.session() as session:
            found = store.get_execution(session, execution_id)
            session.expunge(found)
            return found

    def bodies(self) -> list[str]:
        if not self.body_log.exists():
            return []
        return self.body_log.read_text(encoding="utf-8").split()

    def run_for(self, seconds: float, schedule_id: int) -> list[TaskExecution]:
        """Let the beat fire for ``seconds``, pause the schedule, and wait (beat still
        up, so a waiting slot is still sent) until every row has ended: a slot left
        ``queued`` fails the test."""
        time.sleep(seconds)
        with self.runtime.session() as session:
            store.pause_schedule(session, schedule_id, now=utcnow())
            session.commit()

        def settled() -> list[TaskExecution] | None:
            rows = self.rows()
            return None if any(row.status in OPEN for row in rows) else rows

        try:
            return wait_until(settled, timeout=60, interval=0.5, message="every run to end")
        except AssertionError as exc:
            open_rows = [
                (row.scheduled_for, row.status) for row in self.rows() if row.status in OPEN
            ]
            raise AssertionError(f"{exc}: {open_rows}\n{self.output()}") from None
        finally:
            self.beat.stop()

    def output(self) -> str:
        return f"worker:\n{self.worker.output()[-6000:]}\nbeat:\n{self.beat.output()[-4000:]}"

    def stop(self) -> None:
        self.beat.stop()
        self.worker.stop()


@contextmanager
def running_cluster(
    pg: Any, pg_url: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    """A cluster (nothing started yet), stopped and closed on exit."""
    settings = Settings(
        database_url=pg_url, redis_url=redis_url, celery_broker_url=redis_url, key_prefix=key_prefix
    )
    runtime = Runtime(settings, registry=TaskRegistry(), engine=pg)
    env = service_env(
        database_url=pg_url,
        redis_url=redis_url,
        key_prefix=key_prefix,
        DATAFORGE_TEST_BODY_LOG=str(tmp_path / "bodies.txt"),
        DATAFORGE_CELERY_BEAT_SYNC_EVERY="1",
    )
    running = Cluster(runtime, env, tmp_path)
    try:
        yield running
    finally:
        running.stop()
        runtime.close()
