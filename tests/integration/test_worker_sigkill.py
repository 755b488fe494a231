"""A DataForgeTask run killed by SIGKILL in a real prefork worker (concurrency 2).

The run (``mt.blocking`` of the maintenance app) writes three ``task_log`` lines, then
blocks. Two ways to die:

- the whole worker (main process and pool children) is SIGKILLed: nothing in the worker
  can record anything, so the row stays ``running`` until its lock expires and the reaper
  (``reap_lost_executions``, told the task's traits as a worker's reaper task is) ends
  it ``lost``, with the lines that reached the log bus before the kill as ``log_output``
  and a failure on its schedule's counters;
- only the pool child running it is SIGKILLed: the main process survives, Celery reports
  ``WorkerLostError`` there, and the signal handlers end the row ``lost`` at once (no
  reaper needed), with the same lines, and release the lock by Celery task id.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from tests.integration.procs import CeleryProcess, service_env, wait_until

from dataforge_scheduler.celery.maintenance import TaskTraits, reap_lost_executions
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus, OverlapPolicy
from dataforge_scheduler.redis.keys import schedule_scope
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

APP = "tests.integration.apps.maintenance_app"
TASK = "mt.blocking"
LINES = ["before the kill 0", "before the kill 1", "before the kill 2"]
GRACE = 30
SHORT_LOCK_TTL = 2  # seconds: the lock of a killed worker expires quickly


def traits(task_name: str) -> TaskTraits | None:
    """What ``celery_task_traits`` tells the reaper in a worker that imports the task."""
    return TaskTraits(overlap_policy=OverlapPolicy.SKIP) if task_name == TASK else None


@pytest.fixture
def runtime(
    pg: Any, pg_url: str, redis_client: Any, redis_url: str, key_prefix: str
) -> Iterator[Runtime]:
    settings = Settings(
        database_url=pg_url,
        redis_url=redis_url,
        celery_broker_url=redis_url,
        key_prefix=key_prefix,
        lost_run_grace_seconds=GRACE,
    )
    rt = Runtime(settings, registry=TaskRegistry(), engine=pg)
    yield rt
    rt.close()


@pytest.fixture
def sender(pg_url: str, redis_url: str, key_prefix: str) -> Iterator[Celery]:
    """A Celery app that publishes to the test's own broker keys."""
    env = service_env(database_url=pg_url, redis_url=redis_url, key_prefix=key_prefix)
    prefix = {"global_keyprefix": env["DATAFORGE_TEST_BROKER_PREFIX"]}
    app = Celery("sigkill-sender", broker=redis_url, backend=redis_url)
    app.conf.broker_transport_options = prefix
    app.conf.result_backend_transport_options = prefix
    yield app
    app.close()


def start_worker(
    pg_url: str, redis_url: str, key_prefix: str, tmp_path: Path, **extra: str
) -> CeleryProcess:
    env = service_env(database_url=pg_url, redis_url=redis_url, key_prefix=key_prefix, **extra)
    worker = CeleryProcess(
        "worker", APP, env=env, log_path=tmp_path / "worker.log", args=["-P", "prefork", "-c", "2"]
    )
    return worker.start().wait_ready()


def _schedule(rt: Runtime) -> int:
    with rt.session() as session:
        row = store.create_schedule(
            session,
            {
                "name": "killed",
                "task_type": "interval",
                "task_name": TASK,
                "interval_seconds": 3600,
            },
            now=utcnow(),
            default_timezone="UTC",
        )
        return row.id


def _row(rt: Runtime, celery_task_id: str) -> TaskExecution | None:
    with rt.session() as session:
        return store.get_execution_by_celery_id(session, celery_task_id)


def _run_until_logged(rt: Runtime, sender: Celery, schedule_id: int) -> TaskExecution:
    """Send the run; return its row once its three lines are visible in the log bus."""
    result = sender.send_task(TASK, kwargs={"scheduled_task_id": schedule_id})
    wait_until(lambda: _row(rt, result.id), timeout=30, message="the run's row")
    wait_until(
        lambda: rt.logbus.length(result.id) == len(LINES),
        timeout=15,
        message="the three lines in the log bus",
    )
    running = _row(rt, result.id)
    assert running is not None
    assert running.status is ExecutionStatus.RUNNING
    assert rt.locks.get(schedule_scope(schedule_id)) is not None
    return running


def _assert_lost_with_lines(rt: Runtime, execution_id: int, schedule_id: int) -> TaskExecution:
    with rt.session() as session:
        row = store.get_execution(session, execution_id)
        schedule = store.get_schedule(session, schedule_id)
    assert row.status is ExecutionStatus.LOST
    assert row.log_output == "\n".join(LINES)
    assert row.finished_at is not None
    assert (schedule.run_count, schedule.success_count, schedule.failure_count) == (1, 0, 1)
    assert schedule.last_status is ExecutionStatus.LOST
    assert schedule.last_execution_id == execution_id
    assert rt.logbus.ended(row.celery_task_id) == "lost"
    return row


def test_a_killed_worker_leaves_a_running_row_that_the_reaper_ends_lost_with_its_log(
    runtime: Runtime,
    sender: Celery,
    pg_url: str,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    schedule_id = _schedule(runtime)
    worker = start_worker(
        pg_url,
        redis_url,
        key_prefix,
        tmp_path,
        DATAFORGE_LOCK_TTL_SECONDS=str(SHORT_LOCK_TTL),
    )
    try:
        running = _run_until_logged(runtime, sender, schedule_id)
        worker.kill()  # SIGKILL to the process group: main process and both children
    finally:
        worker.stop()
    after_kill = _row(runtime, running.celery_task_id)
    assert after_kill is not None
    assert after_kill.status is ExecutionStatus.RUNNING

    # Too young for the reaper while within the grace, whatever its lock says.
    assert reap_lost_executions(runtime, traits=traits).lost == []
    scope = schedule_scope(schedule_id)
    wait_until(
        lambda: runtime.locks.get(scope) is None,
        timeout=SHORT_LOCK_TTL + 10,
        message="the dead run's lock to expire",
    )
    later = utcnow() + timedelta(seconds=GRACE + 1)
    report = reap_lost_executions(runtime, now=later, traits=traits)

    assert report.lost == [running.id], worker.output()[-3000:]
    row = _assert_lost_with_lines(runtime, running.id, schedule_id)
    assert (row.error or "").startswith("worker lost:")
    assert scope in (row.error or "")
    assert reap_lost_executions(runtime, now=later, traits=traits).lost == []  # idempotent


def test_a_killed_pool_child_is_recorded_lost_by_the_surviving_main_process(
    runtime: Runtime,
    sender: Celery,
    pg_url: str,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    schedule_id = _schedule(runtime)
    worker = start_worker(pg_url, redis_url, key_prefix, tmp_path)  # default lock TTL: 600 s
    try:
        running = _run_until_logged(runtime, sender, schedule_id)
        child = running.worker_pid
        assert child is not None
        assert child in worker.children()
        os.kill(child, signal.SIGKILL)

        def finished() -> TaskExecution | None:
            row = _row(runtime, running.celery_task_id)
            return row if row is not None and row.status.finished else None

        wait_until(finished, timeout=30, message="the main process to record the lost run")
        # released by Celery task id from the main process, long before its 600 s TTL
        wait_until(
            lambda: runtime.locks.get(schedule_scope(schedule_id)) is None,
            timeout=10,
            message="the lock to be released",
        )
        assert worker.proc is not None
        assert worker.proc.poll() is None, "the main process survives a child's death"
        wait_until(
            lambda: len(worker.children()) == 2 and child not in worker.children(),
            timeout=30,
            message="the pool to replace the killed child",
        )
    finally:
        worker.stop()

    row = _assert_lost_with_lines(runtime, running.id, schedule_id)
    assert "WorkerLostError" in (row.error or ""), row.error
    later = utcnow() + timedelta(seconds=GRACE + 1)
    assert reap_lost_executions(runtime, now=later, traits=traits).lost == []
