"""The scheduler under faults, with real beats and a real worker: no slot silently lost.

``apps.outage_app``'s ``ot.tick`` (a DataForgeTask) appends its Celery task id to a file
each time its body runs, so a test counts bodies, not messages. Fast interval schedules
(2-5 s) run under two beats:

- one beat SIGKILLs itself right after its claim commits, before it sends, five times
  over: another beat sends the stranded slots within the claim's lease (1.5 s), before
  the schedule's next slot, so every slot's body runs once and no row is ``skipped``;
- two beats on hosts whose clocks are 15 s fast and 15 s slow (libfaketime, the worker
  on the true clock): slots start on time by the database's clock, none early, and
  dispatch goes on without a pause when one of them is killed;
- PostgreSQL stopped for 8 s, then Redis restarted, under that load: every slot runs or
  is ``missed`` with its misfire policy's reason; none is ``skipped`` for a copy of its
  own backlog. Whatever happens, the services are running again when the test ends.
"""

from __future__ import annotations

import shutil
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.procs import CeleryProcess, service_env, wait_until
from tests.integration.test_history_outages import (
    _ensure_postgres,
    _local_redis,
    _pg_ctl,
    _redis_config,
    _redis_up,
    _restart_redis,
    _start_redis,
)

from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

APP = "tests.integration.apps.outage_app"
TASK = "ot.tick"
SCHEDULER = "dataforge_scheduler.celery.beat:DatabaseScheduler"
CRASHING = "tests.integration.apps.beat_app:CrashingScheduler"


class Cluster:
    """A worker, the beats a test starts, the bodies' proof file and a runtime."""

    def __init__(self, env: dict[str, str], logs: Path, runtime: Runtime) -> None:
        self.env = env
        self.logs = logs
        self.runtime = runtime
        self.body_log = Path(env["DATAFORGE_TEST_BODY_LOG"])
        self.processes: list[CeleryProcess] = []

    def start(self, kind: str, name: str, *args: str, prefix: list[str] | None = None) -> Any:
        process = CeleryProcess(
            kind,
            APP,
            env=self.env,
            log_path=self.logs / f"{name}.log",
            args=list(args),
            prefix=prefix,
        )
        self.processes.append(process)
        return process.start()

    def schedules(self, intervals: list[int]) -> list[int]:
        with self.runtime.session() as session:
            ids = [
                store.create_schedule(
                    session,
                    {
                        "name": f"fast-{n}",
                        "task_type": "interval",
                        "task_name": TASK,
                        "interval_seconds": seconds,
                        "handler_kwargs": {"work": 0.2},
                    },
                    now=utcnow(),
                    default_timezone="UTC",
                ).id
                for n, seconds in enumerate(intervals)
            ]
            session.commit()
        return ids

    def bodies(self) -> list[str]:
        if not self.body_log.exists():
            return []
        return self.body_log.read_text(encoding="utf-8").split()

    def rows(self) -> list[TaskExecution]:
        with self.runtime.session() as session:
            rows = list(session.scalars(sa.select(TaskExecution).order_by(TaskExecution.id)))
            session.expunge_all()
        return rows

    def pause_all_and_settle(self) -> list[TaskExecution]:
        """Stop new slots, then wait for every row to finish and the outbox to drain."""
        with self.runtime.engine.begin() as connection:
            connection.execute(sa.text("UPDATE scheduled_tasks SET status = 'paused'"))

        def settled() -> list[TaskExecution] | None:
            for process in self.processes:
                if process.kind == "worker":
                    process.restart_if_dead()
            rows = self.rows()
            open_rows = [row for row in rows if not row.status.finished]
            drained = self.runtime.backend.journal.stats().length == 0
            return rows if rows and not open_rows and drained else None

        try:
            return wait_until(settled, timeout=60, interval=0.5, message="every row finished")
        except AssertionError:
            raise AssertionError(self.output()) from None

    def worker_restarts(self) -> int:
        return sum(p.restarts for p in self.processes if p.kind == "worker")

    def output(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.output()[-4000:]}" for p in self.processes)


@pytest.fixture
def cluster(
    pg: Any, pg_url: str, redis_client: Any, redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    env = service_env(
        database_url=pg_url,
        redis_url=redis_url,
        key_prefix=key_prefix,
        DATAFORGE_TEST_BODY_LOG=str(tmp_path / "bodies.txt"),
        DATAFORGE_CELERY_BEAT_SYNC_EVERY="60",
    )
    settings = Settings(
        database_url=pg_url, redis_url=redis_url, celery_broker_url=redis_url, key_prefix=key_prefix
    )
    runtime = Runtime(settings, registry=TaskRegistry(), engine=pg)
    running = Cluster(env, tmp_path, runtime)
    try:
        yield running
    finally:
        for process in running.processes:
            process.stop()
        runtime.close()


def _judge_bodies(cluster: Cluster, rows: list[TaskExecution]) -> None:
    bodies = cluster.bodies()
    repeated = {run for run, count in Counter(bodies).items() if count > 1}
    assert repeated == set(), "a body ran twice"
    statuses = Counter(row.status for row in rows)
    assert statuses[ExecutionStatus.SKIPPED] == 0, [
        (row.scheduled_for, row.error) for row in rows if row.status is ExecutionStatus.SKIPPED
    ]
    assert {row.celery_task_id for row in rows if row.status is ExecutionStatus.SUCCESS} == set(
        bodies
    )


def test_a_beat_killed_after_its_claim_five_times_loses_no_slot_body(cluster: Cluster) -> None:
    cluster.schedules([3, 3, 4, 4, 5, 5])
    cluster.start("worker", "worker", "-P", "prefork", "-c", "3").wait_ready()
    cluster.start("beat", "survivor", "-S", SCHEDULER).wait_ready()
    for round_ in range(5):
        crashing = cluster.start("beat", f"crashing-{round_}", "-S", CRASHING)
        assert crashing.proc is not None
        crashing.proc.wait(timeout=60)
        assert crashing.proc.returncode == -signal.SIGKILL, cluster.output()
    time.sleep(6)  # the last stranded slots are swept, and the next ones run
    rows = cluster.pause_all_and_settle()

    _judge_bodies(cluster, rows)
    statuses = Counter(row.status for row in rows)
    assert set(statuses) == {ExecutionStatus.SUCCESS}, [
        (row.scheduled_for, row.status, row.error)
        for row in rows
        if row.status is not ExecutionStatus.SUCCESS
    ]
    delays = sorted((row.sent_at - row.created_at).total_seconds() for row in rows)
    stranded = [delay for delay in delays if delay >= 1.0]
    print(f"{len(rows)} slots, {len(stranded)} stranded, re-sent after {stranded} s")
    assert len(stranded) >= 5  # each crash left at least one claimed slot unsent
    assert max(delays) <= 3.5  # swept within ~3 s of the claim, not tens of seconds
    # every slot of a schedule between its first and last has its row: none lost
    by_schedule: dict[int, list[Any]] = {}
    for row in rows:
        by_schedule.setdefault(row.scheduled_task_id or 0, []).append(row.scheduled_for)
    for slots in by_schedule.values():
        steps = {later - earlier for earlier, later in pairwise(sorted(slots))}
        assert len(steps) == 1, f"a gap in {slots}"


def _faketime() -> str:
    path = shutil.which("faketime")
    if path is None:
        pytest.fail("the clock-skew test runs beats under libfaketime: apt-get install faketime")
    return path


def test_beats_on_skewed_clocks_fire_by_the_database_clock(cluster: Cluster) -> None:
    faketime = _faketime()
    ids = cluster.schedules([2, 2, 3, 3])
    cluster.env["DONT_FAKE_MONOTONIC"] = "1"
    cluster.start("worker", "worker", "-P", "prefork", "-c", "3").wait_ready()
    fast = cluster.start("beat", "fast", "-S", SCHEDULER, prefix=[faketime, "-f", "+15s"])
    slow = cluster.start("beat", "slow", "-S", SCHEDULER, prefix=[faketime, "-f", "-15s"])
    fast.wait_ready()
    slow.wait_ready()
    assert "Sending due task" in wait_until(
        lambda: fast.output() if "Sending due task" in fast.output() else None,
        timeout=30,
        message="the fast beat to send",
    )
    wait_until(lambda: "Sending due task" in slow.output(), timeout=30, message="slow sends")
    time.sleep(8)
    fast.kill(signal.SIGKILL)
    killed_at = utcnow()
    time.sleep(8)
    rows = cluster.pause_all_and_settle()

    started = [row for row in rows if row.started_at is not None]
    lateness = [(row.started_at - row.scheduled_for).total_seconds() for row in started]
    print(
        f"{len(started)} runs; lateness p50 {statistics.median(lateness):.3f} s, "
        f"min {min(lateness):.3f} s, max {max(lateness):.3f} s"
    )
    assert len(started) >= 20
    assert -0.5 <= statistics.median(lateness) <= 0.5
    assert min(lateness) >= -1.0, "a slot started more than 1 s early"
    _judge_bodies(cluster, rows)
    # no pause in dispatch after the kill: each schedule's slots keep coming on time
    for sid in ids:
        after = sorted(
            row.scheduled_for
            for row in started
            if row.scheduled_task_id == sid and row.scheduled_for > killed_at
        )
        assert len(after) >= 2, f"schedule {sid} stopped after the kill"
        late_after = [
            (row.started_at - row.scheduled_for).total_seconds()
            for row in started
            if row.scheduled_task_id == sid and row.scheduled_for > killed_at
        ]
        assert max(late_after) < 2.0, late_after


def test_a_database_outage_then_a_redis_restart_leave_no_slot_without_a_reason(
    cluster: Cluster, pg: Any, redis_url: str, redis_client: Any
) -> None:
    _local_redis(redis_url)
    config = _redis_config(redis_client)
    cluster.schedules([2, 2, 3, 4, 5])
    cluster.start("worker", "worker", "-P", "prefork", "-c", "3").wait_ready()
    cluster.start("beat", "beat-a", "-S", SCHEDULER).wait_ready()
    cluster.start("beat", "beat-b", "-S", SCHEDULER).wait_ready()
    try:
        time.sleep(5)
        _pg_ctl("stop")
        try:
            time.sleep(8)
        finally:
            _pg_ctl("start")
        _ensure_postgres(pg)
        time.sleep(6)
        _restart_redis(redis_client, config)
        time.sleep(8)
        rows = cluster.pause_all_and_settle()
    finally:
        _ensure_postgres(pg)
        if not _redis_up(redis_client):
            _start_redis(config)
            wait_until(lambda: _redis_up(redis_client), timeout=30, message="Redis to start")

    _judge_bodies(cluster, rows)
    statuses = Counter(row.status for row in rows)
    print(f"{len(rows)} slots: {dict(statuses)}")
    allowed = {ExecutionStatus.SUCCESS, ExecutionStatus.MISSED}
    if cluster.worker_restarts():  # a run the dead worker's pool had begun may be lost
        allowed.add(ExecutionStatus.LOST)
    assert set(statuses) <= allowed, [
        (row.scheduled_for, row.status, row.error) for row in rows if row.status not in allowed
    ]
    assert statuses[ExecutionStatus.MISSED] > 0  # the outage made a backlog
    for row in rows:
        if row.status is ExecutionStatus.MISSED:
            assert "misfire policy run_once runs only the newest" in (row.error or ""), row.error
    by_schedule: dict[int, list[Any]] = {}
    for row in rows:
        by_schedule.setdefault(row.scheduled_task_id or 0, []).append(row.scheduled_for)
    for slots in by_schedule.values():  # every slot of the grid has its row
        steps = {later - earlier for earlier, later in pairwise(sorted(slots))}
        assert len(steps) == 1, f"a gap in {sorted(slots)}"
