"""DataForgeTask runs in a real prefork worker (concurrency 2) on PostgreSQL and Redis.

One worker serves the whole module; each test waits on facts (rows, locks, worker log
lines) with explicit timeouts. Covered: one execution row per run with its log, the
scheduler's pending row reused, two concurrent sends of one schedule running the body
once (the second recorded ``skipped`` while the watchdog keeps the lock past its TTL),
retries then ``failed`` with a traceback, ``extend_lock`` and ``LockLost``, an ``async
def`` body, a duplicate delivery, a hard time limit, and a plain task left untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from tests.integration.apps.worker_app import body_runs, build_app
from tests.integration.procs import CeleryProcess, service_env, wait_until

from dataforge_scheduler.celery.headers import EXECUTION_ID, TRIGGER
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.redis.keys import schedule_scope, task_name_scope
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

APP = "tests.integration.apps.worker_app"


class Services:
    def __init__(self, app: Celery, worker: CeleryProcess, prefix: str, client: redis.Redis):
        self.app = app
        self.worker = worker
        self.prefix = prefix
        self.redis = client

    @property
    def runtime(self) -> Runtime:
        return runtime_for(self.app)


@pytest.fixture(scope="module")
def services(
    pg_url: str, pg_engine: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    prefix = f"dftest-worker-{uuid.uuid4().hex[:8]}"
    env = service_env(database_url=pg_url, redis_url=redis_url, key_prefix=prefix)
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    worker = CeleryProcess(
        "worker",
        APP,
        env=env,
        log_path=log_path,
        args=["-P", "prefork", "-c", "2"],
    )
    client = redis.Redis.from_url(redis_url)
    app = build_app(env)
    try:
        worker.start().wait_ready()
        yield Services(app, worker, prefix, client)
    finally:
        worker.stop()
        runtime_for(app).close()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def db(pg: Any, services: Services) -> Any:
    # schedule ids restart at 1 in every test (pg truncates): restart the body counters too
    counters = list(services.redis.scan_iter(match=f"{services.prefix}:body:*", count=500))
    if counters:
        services.redis.delete(*counters)
    return make_session_factory(pg)


def _schedule(db: Any, task_name: str, name: str | None = None) -> ScheduledTask:
    with db.begin() as session:
        return store.create_schedule(
            session,
            {
                "name": name or f"{task_name}-{uuid.uuid4().hex[:6]}",
                "task_type": "interval",
                "task_name": task_name,
                "interval_seconds": 3600,
            },
            now=utcnow(),
            default_timezone="UTC",
        )


def _claim(db: Any, schedule: ScheduledTask) -> TaskExecution:
    """What the scheduler does for a due slot: a pending row holding the id it sends."""
    with db.begin() as session:
        row = TaskExecution(
            scheduled_task_id=schedule.id,
            scheduled_for=utcnow().replace(microsecond=0),
            task_name=schedule.task_name,
            celery_task_id=str(uuid.uuid4()),
            trigger=ExecutionTrigger.SCHEDULE,
            kwargs={"scheduled_task_id": schedule.id},
        )
        session.add(row)
    return row


def _row(db: Any, celery_task_id: str) -> TaskExecution | None:
    with db() as session:
        return store.get_execution_by_celery_id(session, celery_task_id)


def _finished(db: Any, celery_task_id: str, *, timeout: float = 20.0) -> TaskExecution:
    def done() -> TaskExecution | None:
        row = _row(db, celery_task_id)
        return row if row is not None and row.status.finished else None

    return wait_until(done, timeout=timeout, message=f"run {celery_task_id} to finish")


def _rows(db: Any) -> list[TaskExecution]:
    with db() as session:
        return list(session.scalars(sa.select(TaskExecution).order_by(TaskExecution.id)))


def _schedule_row(db: Any, schedule_id: int) -> ScheduledTask:
    with db() as session:
        found = session.get(ScheduledTask, schedule_id)
        assert found is not None
        return found


def test_a_scheduled_run_finishes_its_pending_row_with_logs(services: Services, db: Any) -> None:
    schedule = _schedule(db, "wt.hello")
    claimed = _claim(db, schedule)
    result = services.app.send_task(
        "wt.hello",
        kwargs={"scheduled_task_id": schedule.id, "lines": 3},
        task_id=claimed.celery_task_id,
        headers={TRIGGER: "schedule", EXECUTION_ID: claimed.id},
    )

    row = _finished(db, claimed.celery_task_id)
    assert result.get(timeout=10)["synced_count"] == 10
    assert [r.id for r in _rows(db)] == [claimed.id], "exactly one row: the claimed one"
    assert row.status is ExecutionStatus.SUCCESS
    assert row.trigger is ExecutionTrigger.SCHEDULE
    assert row.result["synced_count"] == 10
    assert row.log_output == "开始同步账号... 0\nline 0\nline 1\nline 2"
    assert (row.worker_hostname or "").startswith("celery@")
    assert row.worker_pid in services.worker.children()
    assert row.duration_ms is not None
    assert row.duration_ms >= 0
    assert row.started_at is not None
    assert row.finished_at is not None

    counted = _schedule_row(db, schedule.id)
    assert (counted.run_count, counted.success_count, counted.failure_count) == (1, 1, 0)
    assert counted.last_status is ExecutionStatus.SUCCESS
    assert counted.last_execution_id == row.id

    runtime = services.runtime
    assert [line.text for line in runtime.logbus.read(row.celery_task_id)] == row.log_output.split(
        "\n"
    )
    assert runtime.logbus.ended(row.celery_task_id) == "success"
    ttl = services.redis.ttl(f"{services.prefix}:log:{row.celery_task_id}")
    assert 0 < ttl <= runtime.settings.log_ttl_seconds
    assert runtime.locks.get(schedule_scope(schedule.id)) is None


def test_a_send_that_bypassed_the_scheduler_gets_a_running_then_finished_row(
    services: Services, db: Any
) -> None:
    result = services.app.send_task("wt.hello", kwargs={"lines": 0, "n": 7})
    row = _finished(db, result.id)
    assert row.status is ExecutionStatus.SUCCESS
    assert row.trigger is ExecutionTrigger.EXTERNAL
    assert row.scheduled_task_id is None
    assert row.kwargs == {"lines": 0, "n": 7}
    assert row.log_output == "开始同步账号... 7"
    assert len(_rows(db)) == 1


def test_two_concurrent_sends_run_the_body_once_and_record_one_skipped(
    services: Services, db: Any
) -> None:
    schedule = _schedule(db, "wt.slow")
    scope = schedule_scope(schedule.id)
    locks = services.runtime.locks
    first = services.app.send_task(
        "wt.slow", kwargs={"scheduled_task_id": schedule.id, "seconds": 3.0}
    )
    held = wait_until(lambda: locks.get(scope), timeout=15, message="the first run's lock")
    assert held.celery_task_id == first.id
    # wait until the lock has lived past its 1 s TTL: only the watchdog can keep it
    wait_until(
        lambda: (utcnow() - held.acquired_at).total_seconds() > 1.6 and locks.get(scope),
        timeout=10,
        message="the lock to outlive its TTL",
    )
    second = services.app.send_task(
        "wt.slow", kwargs={"scheduled_task_id": schedule.id, "seconds": 0.1}
    )

    skipped = _finished(db, second.id)
    done = _finished(db, first.id)
    assert done.status is ExecutionStatus.SUCCESS
    assert skipped.status is ExecutionStatus.SKIPPED
    assert skipped.result["skipped"] == "locked"
    assert skipped.result["holder"]["celery_task_id"] == first.id
    # sent directly, the first run had no row before it started: its holder names no id
    assert skipped.result["holder"]["execution_id"] is None
    assert first.id in (skipped.error or "")
    assert body_runs(services.redis, services.prefix, "slow", schedule.id) == 1
    assert locks.get(scope) is None
    counted = _schedule_row(db, schedule.id)
    assert (counted.run_count, counted.success_count) == (1, 1)
    with pytest.raises(Exception, match="is held by task"):
        second.get(timeout=5)  # the skip is stored, so a caller is not left waiting


def test_a_failing_task_records_its_retries_then_failed_with_traceback(
    services: Services, db: Any
) -> None:
    schedule = _schedule(db, "wt.flaky")
    result = services.app.send_task("wt.flaky", kwargs={"scheduled_task_id": schedule.id})

    row = _finished(db, result.id)
    assert row.status is ExecutionStatus.FAILED
    assert row.retries == 2
    assert row.error == "ValueError: boom on attempt 2"
    assert row.traceback is not None
    assert "Traceback" in row.traceback
    assert "ValueError: boom on attempt 2" in row.traceback
    log = row.log_output or ""
    for attempt in range(3):
        assert f"attempt {attempt}" in log
    assert log.count("retrying in") == 2
    assert len(_rows(db)) == 1
    assert body_runs(services.redis, services.prefix, "flaky", schedule.id) == 3
    counted = _schedule_row(db, schedule.id)
    assert (counted.run_count, counted.failure_count) == (1, 1)
    assert services.runtime.locks.get(schedule_scope(schedule.id)) is None


def test_extend_lock_outlives_the_ttl_and_raises_lock_lost_after_a_force_release(
    services: Services, db: Any
) -> None:
    scope = task_name_scope("wt.extender")
    locks = services.runtime.locks
    result = services.app.send_task("wt.extender")
    held = wait_until(lambda: locks.get(scope), timeout=15, message="the extender's lock")
    wait_until(
        lambda: (utcnow() - held.acquired_at).total_seconds() > 2.0 and locks.get(scope),
        timeout=10,
        message="the lock to outlive its 1 s TTL through extend_lock()",
    )
    released = locks.force_release(scope)
    assert released is not None
    assert released.celery_task_id == result.id

    row = _finished(db, result.id)
    assert row.status is ExecutionStatus.FAILED
    assert (row.error or "").startswith("LockLost:")
    assert "lock lost after" in (row.log_output or "")


def test_an_async_task_logs_and_succeeds(services: Services, db: Any) -> None:
    result = services.app.send_task("wt.aio")
    row = _finished(db, result.id)
    assert row.status is ExecutionStatus.SUCCESS
    assert row.result == {"spawned": "child"}
    assert row.log_output == (f"async start {result.id}\nfrom a spawned task\nfrom a worker thread")
    assert result.get(timeout=5) == {"spawned": "child"}


def test_a_duplicate_delivery_of_a_finished_run_runs_nothing(services: Services, db: Any) -> None:
    schedule = _schedule(db, "wt.hello")
    first = services.app.send_task("wt.hello", kwargs={"scheduled_task_id": schedule.id})
    before = _finished(db, first.id)

    services.app.send_task("wt.hello", kwargs={"scheduled_task_id": schedule.id}, task_id=first.id)
    services.worker.wait_for_output(rf"wt\.hello\[{first.id}\] ignored", timeout=15)
    after = _row(db, first.id)
    assert after is not None
    assert (after.status, after.finished_at, after.log_output) == (
        before.status,
        before.finished_at,
        before.log_output,
    )
    assert body_runs(services.redis, services.prefix, "hello", schedule.id) == 1
    assert _schedule_row(db, schedule.id).run_count == 1


def test_a_hard_time_limit_fails_the_run_and_frees_the_lock(services: Services, db: Any) -> None:
    schedule = _schedule(db, "wt.hard_limit")
    result = services.app.send_task("wt.hard_limit", kwargs={"scheduled_task_id": schedule.id})
    row = _finished(db, result.id, timeout=30)
    assert row.status is ExecutionStatus.FAILED
    assert "about to overrun" in (row.log_output or "")
    wait_until(
        lambda: services.runtime.locks.get(schedule_scope(schedule.id)) is None,
        timeout=10,
        message="the lock to be released",
    )
    assert _schedule_row(db, schedule.id).failure_count == 1


def test_a_plain_celery_task_is_untouched(services: Services, db: Any) -> None:
    marker = uuid.uuid4().hex
    assert services.app.send_task("wt.plain", args=[marker]).get(timeout=15) == marker
    assert _rows(db) == []
    assert body_runs(services.redis, services.prefix, "plain", marker) == 1
