"""The reaper and retention on real PostgreSQL and real Redis, and the reaper task run by a
real prefork worker.

Rows are planted in the past with the store's own functions and judged at real "now"
(Redis lock TTLs run on real time). Worker tests share the ``worker_env`` and ``sender``
fixtures; the SIGKILL-mid-run case (a real DataForgeTask killed, then reaped) belongs
next to ``test_a_worker_runs_the_reaper_sent_by_name`` and reuses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from tests.integration.procs import CeleryProcess, service_env, wait_until
from tests.runs import start

from dataforge_scheduler.celery.maintenance import (
    CLEANUP_TASK_NAME,
    REAP_TASK_NAME,
    TaskTraits,
    cleanup_executions,
    ensure_maintenance_schedules,
    reap_lost_executions,
)
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.core.ports import LockOwner
from dataforge_scheduler.redis.keys import Keys, schedule_scope, task_name_scope
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

APP = "tests.integration.apps.maintenance_app"
GRACE = 60
TIMEOUT = 600


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
        celery_task_default_timeout=TIMEOUT,
        celery_broker_visibility_timeout=3 * TIMEOUT,
    )
    rt = Runtime(settings, registry=TaskRegistry(), engine=pg)
    yield rt
    rt.close()


def _schedule(rt: Runtime, *, overlap: str = "skip", now: datetime) -> int:
    with rt.session() as session:
        row = store.create_schedule(
            session,
            {
                "name": f"s-{overlap}",
                "task_type": "interval",
                "task_name": "dataforge.work",
                "interval_seconds": 3600,
                "overlap_policy": overlap,
            },
            now=now,
            default_timezone="UTC",
        )
        return row.id


def _start(rt: Runtime, celery_id: str, *, at: datetime, schedule_id: int | None = None) -> int:
    with rt.session() as session:
        row = start(
            session,
            celery_task_id=celery_id,
            task_name="dataforge.work",
            scheduled_task_id=schedule_id,
            trigger=ExecutionTrigger.SCHEDULE if schedule_id else ExecutionTrigger.EXTERNAL,
            worker_hostname="gone@host",
            worker_pid=4242,
            kwargs={},
            retries=0,
            now=at,
        )
        assert row is not None
        return row.id


def _known(task_name: str) -> TaskTraits:
    """Traits of a task the reaper's worker imports: DataForgeTask's defaults (a lock)."""
    return TaskTraits()


def _status(rt: Runtime, execution_id: int) -> ExecutionStatus:
    with rt.session() as session:
        return store.get_execution(session, execution_id).status


# ---------------------------------------------------------------- the functions


def test_reaper_judges_runs_by_their_redis_locks(runtime: Runtime) -> None:
    now = utcnow()
    past = now - timedelta(minutes=5)
    schedule_id = _schedule(runtime, now=past - timedelta(hours=1))
    dead = _start(runtime, "dead", at=past, schedule_id=schedule_id)
    runtime.logbus.append("dead", ["before the crash", "第二行"])
    alive = _start(runtime, "alive", at=past)
    runtime.locks.acquire(task_name_scope("dataforge.work"), LockOwner("alive"), ttl=60)
    fresh = _start(runtime, "fresh", at=now - timedelta(seconds=GRACE - 5))

    report = reap_lost_executions(runtime, now=now, traits=_known)

    assert (report.examined, report.alive, report.lost) == (2, 1, [dead])
    assert _status(runtime, alive) is ExecutionStatus.RUNNING
    assert _status(runtime, fresh) is ExecutionStatus.RUNNING
    with runtime.session() as session:
        row = store.get_execution(session, dead)
        assert row.status is ExecutionStatus.LOST
        assert row.log_output == "before the crash\n第二行"
        assert schedule_scope(schedule_id) in (row.error or "")
        schedule = store.get_schedule(session, schedule_id)
        assert (schedule.failure_count, schedule.last_status) == (1, ExecutionStatus.LOST)
    assert runtime.logbus.ended("dead") == "lost"
    log_key = Keys(runtime.settings.key_prefix).log("dead")
    assert 0 < runtime.backend.client.ttl(log_key) <= runtime.settings.log_ttl_seconds
    assert reap_lost_executions(runtime, now=now, traits=_known).lost == []  # idempotent


def test_an_expired_or_stolen_lock_means_lost(runtime: Runtime) -> None:
    past = utcnow() - timedelta(minutes=5)
    schedule_id = _schedule(runtime, now=past - timedelta(hours=1))
    stolen = _start(runtime, "stolen", at=past, schedule_id=schedule_id)
    runtime.locks.acquire(schedule_scope(schedule_id), LockOwner("thief"), ttl=60)
    expired = _start(runtime, "expired", at=past)
    scope = task_name_scope("dataforge.work")
    runtime.locks.acquire(scope, LockOwner("expired"), ttl=0.05)
    wait_until(lambda: runtime.locks.get(scope) is None, timeout=5, message="lock expiry")

    assert sorted(reap_lost_executions(runtime, traits=_known).lost) == sorted([stolen, expired])


def test_a_run_without_lock_is_judged_by_its_time_limit(runtime: Runtime) -> None:
    now = utcnow()
    schedule_id = _schedule(runtime, overlap="allow", now=now - timedelta(days=1))
    young = _start(runtime, "young", at=now - timedelta(seconds=TIMEOUT), schedule_id=schedule_id)
    with runtime.session() as session:  # a second run of the same schedule, older
        old = start(
            session,
            celery_task_id="old",
            task_name="dataforge.work",
            scheduled_task_id=schedule_id,
            trigger=ExecutionTrigger.MANUAL,
            worker_hostname=None,
            worker_pid=None,
            kwargs={},
            retries=0,
            now=now - timedelta(seconds=TIMEOUT + GRACE + 1),
        )
        assert old is not None
        old_id = old.id

    assert reap_lost_executions(runtime, now=now).lost == [old_id]
    assert _status(runtime, young) is ExecutionStatus.RUNNING


def test_cleanup_deletes_old_finished_history_in_batches(runtime: Runtime) -> None:
    now = utcnow()
    old = now - timedelta(days=31)
    with runtime.session() as session:
        for index, status in enumerate([*ExecutionStatus, ExecutionStatus.SUCCESS]):
            finished = status.finished
            session.add(
                TaskExecution(
                    celery_task_id=f"c-{index}",
                    task_name="dataforge.work",
                    trigger=ExecutionTrigger.MANUAL,
                    status=status,
                    created_at=old if index < len(ExecutionStatus) else now,
                    finished_at=(old if index < len(ExecutionStatus) else now)
                    if finished
                    else None,
                )
            )

    assert cleanup_executions(runtime, now=now, batch_size=2, max_batches=2) == 4
    assert cleanup_executions(runtime, now=now, batch_size=2) == 2  # six finished states
    with runtime.session() as session:
        left = {row.status for row in session.query(TaskExecution)}
    # the open ones, however old, and the recent success
    assert left == {
        ExecutionStatus.PENDING,
        ExecutionStatus.QUEUED,
        ExecutionStatus.RUNNING,
        ExecutionStatus.RETRYING,
        ExecutionStatus.SUCCESS,
    }


def test_maintenance_schedules_are_created_once(runtime: Runtime) -> None:
    assert len(ensure_maintenance_schedules(runtime)) == 2
    assert ensure_maintenance_schedules(runtime) == []
    with runtime.session() as session:
        names = {row.task_name for row in store.list_schedules(session).items if row.is_system}
    assert names == {REAP_TASK_NAME, CLEANUP_TASK_NAME}


# ---------------------------------------------------------------- a real worker


@pytest.fixture
def worker_env(
    pg: Any, pg_url: str, redis_client: Any, redis_url: str, key_prefix: str
) -> dict[str, str]:
    return service_env(database_url=pg_url, redis_url=redis_url, key_prefix=key_prefix)


@pytest.fixture
def sender(worker_env: dict[str, str], redis_url: str) -> Iterator[Celery]:
    """A Celery app that publishes to (and reads results from) the test's own keys."""
    prefix = {"global_keyprefix": worker_env["DATAFORGE_TEST_BROKER_PREFIX"]}
    app = Celery("maintenance-sender", broker=redis_url, backend=redis_url)
    app.conf.broker_transport_options = prefix
    app.conf.result_backend_transport_options = prefix
    yield app
    app.close()


def start_worker(env: dict[str, str], tmp_path: Path) -> CeleryProcess:
    worker = CeleryProcess(
        "worker", APP, env=env, log_path=tmp_path / "worker.log", args=["-P", "prefork", "-c", "2"]
    )
    return worker.start().wait_ready()


@pytest.mark.worker
@pytest.mark.slow
def test_a_worker_runs_the_reaper_sent_by_name(
    runtime: Runtime, worker_env: dict[str, str], sender: Celery, tmp_path: Path
) -> None:
    # dataforge.work is not the worker's task: judged by the default 4 h time limit
    dead = _start(runtime, "planted-dead", at=utcnow() - timedelta(hours=5))
    runtime.logbus.append("planted-dead", ["last words"])
    worker = start_worker(worker_env, tmp_path)
    try:
        result = sender.send_task(REAP_TASK_NAME).get(timeout=30)
    finally:
        worker.stop()
    assert dead in result["lost"], worker.output()[-3000:]
    with runtime.session() as session:
        row = store.get_execution(session, dead)
        assert (row.status, row.log_output) == (ExecutionStatus.LOST, "last words")
