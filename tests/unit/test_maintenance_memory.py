"""The reaper and retention on SQLite with the in-memory locks and log bus, time moved by
a ManualClock; and the maintenance tasks' registration on a real Celery app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from tests.runs import finish, manual, start

from dataforge_scheduler.celery.maintenance import (
    CLEANUP_TASK_NAME,
    REAP_TASK_NAME,
    TaskTraits,
    cleanup_audit,
    cleanup_executions,
    ensure_maintenance_schedules,
    reap_lost_executions,
    register_maintenance_tasks,
)
from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger, OverlapPolicy
from dataforge_scheduler.core.ports import LockOwner
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.history import HistoryWriter
from dataforge_scheduler.redis.keys import schedule_scope, task_name_scope
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution, create_all
from dataforge_scheduler.sql.store import maintenance as sql
from dataforge_scheduler.wiring import setup

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GRACE = 60
TIMEOUT = 600
VISIBILITY = 3 * TIMEOUT


def _settings(db: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{db}",
        "redis_url": "memory://",
        "celery_broker_url": "memory://",
        "celery_result_backend": "cache+memory://",
        "lost_run_grace_seconds": GRACE,
        "celery_task_default_timeout": TIMEOUT,
        "celery_broker_visibility_timeout": VISIBILITY,
        "execution_retention_days": 30,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(tmp_path: Path, clock: ManualClock) -> Iterator[Runtime]:
    rt = Runtime(_settings(tmp_path / "m.db"), registry=TaskRegistry(), clock=clock)
    create_all(rt.engine)
    yield rt
    rt.engine.dispose()


def _schedule(rt: Runtime, name: str = "s", *, overlap: str = "skip") -> int:
    with rt.session() as session:
        row = store.create_schedule(
            session,
            {
                "name": name,
                "task_type": "interval",
                "task_name": "dataforge.work",
                "interval_seconds": 3600,
                "overlap_policy": overlap,
            },
            now=rt.clock.now(),
            default_timezone="UTC",
        )
        return row.id


def _start(
    rt: Runtime, celery_id: str, *, schedule_id: int | None = None, task: str = "dataforge.work"
) -> int:
    with rt.session() as session:
        row = start(
            session,
            celery_task_id=celery_id,
            task_name=task,
            scheduled_task_id=schedule_id,
            trigger=ExecutionTrigger.SCHEDULE,
            worker_hostname="w1",
            worker_pid=42,
            kwargs={},
            retries=0,
            now=rt.clock.now(),
        )
        assert row is not None
        return row.id


def _known(task_name: str) -> TaskTraits:
    """A traits lookup that knows every task: DataForgeTask's defaults (takes a lock)."""
    return TaskTraits()


def _lock(rt: Runtime, scope: str, celery_id: str, *, ttl: float = 3600) -> None:
    rt.locks.acquire(scope, LockOwner(celery_task_id=celery_id), ttl=ttl)


def _row(rt: Runtime, execution_id: int) -> TaskExecution:
    with rt.session() as session:
        row = store.get_execution(session, execution_id)
        session.expunge(row)
        return row


def _sched(rt: Runtime, schedule_id: int) -> ScheduledTask:
    with rt.session() as session:
        row = store.get_schedule(session, schedule_id)
        session.expunge(row)
        return row


# ---------------------------------------------------------------- reaper


def test_a_run_without_its_lock_is_lost_with_its_log_and_counters(
    runtime: Runtime, clock: ManualClock
) -> None:
    schedule_id = _schedule(runtime)
    run_id = _start(runtime, "dead-1", schedule_id=schedule_id)
    runtime.logbus.append("dead-1", ["step 1", "step 2 ✓"])
    clock.advance(GRACE + 1)

    report = reap_lost_executions(runtime, traits=_known)

    assert report.lost == [run_id]
    row = _row(runtime, run_id)
    assert row.status is ExecutionStatus.LOST
    assert row.error is not None
    assert row.error.startswith("worker lost:")
    assert schedule_scope(schedule_id) in row.error
    assert "w1" in row.error
    assert row.log_output == "step 1\nstep 2 ✓"
    assert row.finished_at == clock.now()
    assert runtime.logbus.ended("dead-1") == "lost"
    schedule = _sched(runtime, schedule_id)
    assert (schedule.run_count, schedule.failure_count, schedule.success_count) == (1, 1, 0)
    assert schedule.last_status is ExecutionStatus.LOST
    assert schedule.last_execution_id == run_id


def test_a_run_holding_its_lock_is_alive(runtime: Runtime, clock: ManualClock) -> None:
    schedule_id = _schedule(runtime)
    run_id = _start(runtime, "alive-1", schedule_id=schedule_id)
    _lock(runtime, schedule_scope(schedule_id), "alive-1")
    clock.advance(3 * TIMEOUT)  # age alone never condemns a run that holds its lock

    report = reap_lost_executions(runtime, traits=_known)

    assert (report.examined, report.alive, report.lost) == (1, 1, [])
    assert _row(runtime, run_id).status is ExecutionStatus.RUNNING


def test_a_run_whose_lock_another_run_holds_is_lost(runtime: Runtime, clock: ManualClock) -> None:
    schedule_id = _schedule(runtime)
    run_id = _start(runtime, "old-run", schedule_id=schedule_id)
    _lock(runtime, schedule_scope(schedule_id), "new-run")
    clock.advance(GRACE + 1)

    assert reap_lost_executions(runtime, traits=_known).lost == [run_id]
    row = _row(runtime, run_id)
    assert row.status is ExecutionStatus.LOST
    assert "new-run" in (row.error or "")


def test_a_run_whose_lock_expired_is_lost(runtime: Runtime, clock: ManualClock) -> None:
    run_id = _start(runtime, "expired")  # no schedule: the task-name scope
    _lock(runtime, task_name_scope("dataforge.work"), "expired", ttl=30)
    clock.advance(GRACE + 1)

    assert reap_lost_executions(runtime, traits=_known).lost == [run_id]
    assert "expired or released" in (_row(runtime, run_id).error or "")


def test_a_run_within_the_grace_is_never_reaped(runtime: Runtime, clock: ManualClock) -> None:
    run_id = _start(runtime, "just-started")  # has not taken its lock yet
    clock.advance(GRACE - 1)

    report = reap_lost_executions(runtime, traits=_known)

    assert report.examined == 0
    assert _row(runtime, run_id).status is ExecutionStatus.RUNNING


def test_a_lock_held_under_another_scope_keeps_the_run_alive(
    runtime: Runtime, clock: ManualClock
) -> None:
    schedule_id = _schedule(runtime)
    run_id = _start(runtime, "orphan", schedule_id=schedule_id)
    _lock(runtime, schedule_scope(schedule_id), "orphan")
    with runtime.session() as session:
        store.delete_schedule(session, schedule_id)  # the row's scheduled_task_id -> NULL
    assert _row(runtime, run_id).scheduled_task_id is None
    clock.advance(GRACE + 1)

    assert reap_lost_executions(runtime, traits=_known).lost == []
    assert _row(runtime, run_id).status is ExecutionStatus.RUNNING


@pytest.mark.parametrize("via", ["schedule", "task"])
def test_a_run_without_lock_lives_until_its_time_limit_plus_grace(
    runtime: Runtime, clock: ManualClock, via: str
) -> None:
    if via == "schedule":
        run_id = _start(runtime, "free", schedule_id=_schedule(runtime, overlap="allow"))
        traits = None
    else:
        run_id = _start(runtime, "free")

        def traits(name: str) -> TaskTraits:
            return TaskTraits(overlap_policy=OverlapPolicy.ALLOW)

    clock.advance(TIMEOUT + GRACE - 1)
    assert reap_lost_executions(runtime, traits=traits).lost == []
    assert _row(runtime, run_id).status is ExecutionStatus.RUNNING

    clock.advance(2)
    assert reap_lost_executions(runtime, traits=traits).lost == [run_id]
    assert "overlap_policy allow" in (_row(runtime, run_id).error or "")


def test_a_task_time_limit_overrides_the_default(runtime: Runtime, clock: ManualClock) -> None:
    run_id = _start(runtime, "long")

    def traits(name: str) -> TaskTraits:
        return TaskTraits(overlap_policy=OverlapPolicy.ALLOW, time_limit=3 * TIMEOUT)

    clock.advance(2 * TIMEOUT)
    assert reap_lost_executions(runtime, traits=traits).lost == []
    clock.advance(TIMEOUT + GRACE + 1)
    assert reap_lost_executions(runtime, traits=traits).lost == [run_id]


def test_a_task_this_worker_does_not_know_is_judged_by_its_time_limit(
    runtime: Runtime, clock: ManualClock
) -> None:
    # its traits are unknown: it may take no lock at all (overlap_policy "allow" on its
    # class), so a missing lock proves nothing; its time limit still does
    run_id = _start(runtime, "elsewhere", schedule_id=_schedule(runtime), task="other.job")

    def unknown(name: str) -> TaskTraits | None:
        return None

    clock.advance(TIMEOUT + GRACE - 1)
    assert reap_lost_executions(runtime, traits=unknown).lost == []
    assert reap_lost_executions(runtime).lost == []  # no lookup at all: unknown as well
    assert _row(runtime, run_id).status is ExecutionStatus.RUNNING

    clock.advance(2)
    assert reap_lost_executions(runtime, traits=unknown).lost == [run_id]
    error = _row(runtime, run_id).error or ""
    assert "not known to this worker" in error
    assert f"{TIMEOUT} s time limit" in error


def _pending(
    rt: Runtime, celery_id: str, *, schedule_id: int | None = None, sent_after: float | None = None
) -> int:
    with rt.session() as session:
        row = manual(
            session,
            scheduled_task_id=schedule_id,
            task_name="dataforge.work",
            celery_task_id=celery_id,
            kwargs={},
            now=rt.clock.now(),
        )
        if sent_after is not None:
            store.mark_sent(session, [row.id], now=rt.clock.now() + timedelta(seconds=sent_after))
        return row.id


def test_a_pending_run_whose_message_never_came_is_lost(
    runtime: Runtime, clock: ManualClock
) -> None:
    schedule_id = _schedule(runtime)
    unsent = _pending(runtime, "never-sent", schedule_id=schedule_id)
    sent = _pending(runtime, "sent-later", sent_after=100)

    clock.advance(VISIBILITY + GRACE - 1)
    assert reap_lost_executions(runtime, traits=_known).lost == []
    clock.advance(2)
    report = reap_lost_executions(runtime, traits=_known)

    assert (report.examined, report.lost) == (1, [unsent])
    row = _row(runtime, unsent)
    assert row.status is ExecutionStatus.LOST
    assert (row.error or "").startswith("never started: the message was lost or never sent")
    schedule = _sched(runtime, schedule_id)
    assert (schedule.run_count, schedule.failure_count) == (0, 0)  # it never ran
    assert (schedule.last_status, schedule.last_execution_id) == (ExecutionStatus.LOST, unsent)
    assert _row(runtime, sent).status is ExecutionStatus.PENDING  # judged from its send
    clock.advance(100)
    assert reap_lost_executions(runtime, traits=_known).lost == [sent]


def test_a_retrying_run_whose_retry_never_came_is_lost(
    runtime: Runtime, clock: ManualClock
) -> None:
    run_id = _start(runtime, "retry-lost")
    runtime.logbus.append("retry-lost", ["attempt 0"])
    with runtime.session() as session:
        finish(
            session,
            celery_task_id="retry-lost",
            status=ExecutionStatus.RETRYING,
            now=clock.now(),
            error="ValueError: boom",
            attempt=0,
        )

    # the attempt may have run up to its time limit before it asked for the retry
    clock.advance(TIMEOUT + VISIBILITY + GRACE - 1)
    assert reap_lost_executions(runtime, traits=_known).lost == []
    clock.advance(2)
    assert reap_lost_executions(runtime, traits=_known).lost == [run_id]

    row = _row(runtime, run_id)
    assert row.status is ExecutionStatus.LOST
    assert (row.error or "").startswith("retry never started: the retry message was lost")
    assert row.log_output == "attempt 0"
    assert runtime.logbus.ended("retry-lost") == "lost"


def test_a_second_pass_changes_nothing(runtime: Runtime, clock: ManualClock) -> None:
    schedule_id = _schedule(runtime)
    run_id = _start(runtime, "dead-2", schedule_id=schedule_id)
    clock.advance(GRACE + 1)
    assert reap_lost_executions(runtime, traits=_known).lost == [run_id]
    first = _row(runtime, run_id)

    clock.advance(10)
    report = reap_lost_executions(runtime, traits=_known)

    assert (report.examined, report.lost) == (0, [])
    again = _row(runtime, run_id)
    assert (again.finished_at, again.error) == (first.finished_at, first.error)
    assert _sched(runtime, schedule_id).failure_count == 1


def test_batches_page_past_live_runs(runtime: Runtime, clock: ManualClock) -> None:
    dead, alive = [], []
    for index in range(7):
        celery_id = f"run-{index}"
        run_id = _start(runtime, celery_id, task=f"dataforge.t{index}")
        if index % 2:
            _lock(runtime, task_name_scope(f"dataforge.t{index}"), celery_id)
            alive.append(run_id)
        else:
            dead.append(run_id)
        clock.advance(1)
    clock.advance(GRACE + 1)

    report = reap_lost_executions(runtime, batch_size=2, traits=_known)

    assert (report.examined, report.alive) == (7, 3)
    assert sorted(report.lost) == dead
    assert {_row(runtime, i).status for i in alive} == {ExecutionStatus.RUNNING}


def test_a_long_log_is_capped_with_a_marker(tmp_path: Path, clock: ManualClock) -> None:
    rt = Runtime(
        _settings(tmp_path / "cap.db", log_max_bytes=20), registry=TaskRegistry(), clock=clock
    )
    create_all(rt.engine)
    run_id = _start(rt, "chatty")
    rt.logbus.append("chatty", [f"line {i:02d}" for i in range(10)])
    clock.advance(GRACE + 1)

    reap_lost_executions(rt, traits=_known)

    log = _row(rt, run_id).log_output or ""
    assert log.startswith("line 00\nline 01\n")
    assert "line 09" not in log
    assert "[log truncated:" in log.splitlines()[-1]
    rt.engine.dispose()


def test_without_log_lines_the_stored_log_is_kept(runtime: Runtime, clock: ManualClock) -> None:
    run_id = _start(runtime, "quiet")
    with runtime.session() as session:
        session.get(TaskExecution, run_id).log_output = "from an earlier attempt"  # type: ignore[union-attr]
    clock.advance(GRACE + 1)

    reap_lost_executions(runtime, traits=_known)

    assert _row(runtime, run_id).log_output == "from an earlier attempt"


def test_a_run_that_restarted_since_it_was_read_is_not_locked(
    runtime: Runtime, clock: ManualClock
) -> None:
    run_id = _start(runtime, "retried")
    clock.advance(GRACE + 1)
    with runtime.session() as session:
        [seen] = sql.select_running_before(session, cutoff=clock.now(), limit=10)
    with runtime.session() as session:  # the next attempt starts meanwhile
        row = session.get(TaskExecution, run_id)
        assert row is not None
        row.retries, row.started_at = 1, clock.now()
    with runtime.session() as session:
        assert sql.lock_running_run(session, seen) is None


def test_bad_batch_sizes_are_refused(runtime: Runtime) -> None:
    with pytest.raises(ConfigurationError, match="batch_size"):
        reap_lost_executions(runtime, batch_size=0)
    with pytest.raises(ConfigurationError, match="max_batches"):
        cleanup_executions(runtime, max_batches=0)


# ---------------------------------------------------------------- retention


def _finished(rt: Runtime, celery_id: str, status: ExecutionStatus, *, at: datetime) -> int:
    with rt.session() as session:
        row = TaskExecution(
            celery_task_id=celery_id,
            task_name="dataforge.work",
            trigger=ExecutionTrigger.MANUAL,
            status=status,
            created_at=at - timedelta(minutes=1),
            started_at=at - timedelta(minutes=1) if status.finished else None,
            finished_at=at if status.finished else None,
        )
        session.add(row)
        session.flush()
        return row.id


def test_cleanup_deletes_only_old_finished_runs_in_batches(
    runtime: Runtime, clock: ManualClock
) -> None:
    old, recent = START - timedelta(days=31), START - timedelta(days=29)
    doomed = [
        _finished(runtime, f"old-{status}", status, at=old)
        for status in ExecutionStatus
        if status.finished
    ]
    kept = [
        _finished(runtime, f"open-{status}", status, at=old)
        for status in ExecutionStatus
        if not status.finished
    ]
    kept.append(_finished(runtime, "recent", ExecutionStatus.SUCCESS, at=recent))
    assert len(doomed) == 6  # success failed skipped missed lost revoked

    assert cleanup_executions(runtime, batch_size=2, max_batches=2) == 4  # bounded
    assert cleanup_executions(runtime, batch_size=2, max_batches=2) == 2
    assert cleanup_executions(runtime) == 0

    with runtime.session() as session:
        left = {row.id for row in session.query(TaskExecution)}
    assert left == set(kept)


def test_cleanup_uses_the_retention_setting(runtime: Runtime, clock: ManualClock) -> None:
    run_id = _finished(runtime, "edge", ExecutionStatus.FAILED, at=START)
    clock.advance(timedelta(days=30))
    assert cleanup_executions(runtime) == 0  # exactly at the limit: kept
    clock.advance(1)
    assert cleanup_executions(runtime) == 1
    with runtime.session() as session:
        assert session.get(TaskExecution, run_id) is None


# ---------------------------------------------------------------- Celery registration


def test_setup_registers_the_tasks_once(tmp_path: Path) -> None:
    app = Celery("maint-x")
    registry = TaskRegistry()
    setup(app, _settings(tmp_path / "a.db"), registry=registry)
    setup(app, _settings(tmp_path / "a.db"), registry=registry)

    names = sorted(name for name in app.tasks if name.startswith("dataforge.maintenance."))
    assert names == sorted([CLEANUP_TASK_NAME, REAP_TASK_NAME])
    for name in names:
        info = registry.get(name)
        assert info.is_system
        assert info.category == "maintenance"


def test_registering_on_a_finalized_app_is_idempotent(runtime: Runtime) -> None:
    app = Celery("maint-y")
    app.finalize()
    register_maintenance_tasks(app, runtime)
    first = app.tasks[REAP_TASK_NAME]
    register_maintenance_tasks(app, runtime)
    assert app.tasks[REAP_TASK_NAME] is first
    assert REAP_TASK_NAME not in Celery("maint-other").tasks  # not shared with other apps


def test_the_celery_tasks_run_the_functions(tmp_path: Path) -> None:
    app = Celery("maint-z")
    clock = ManualClock(START)
    rt = setup(app, _settings(tmp_path / "z.db"), registry=TaskRegistry(), clock=clock)
    create_all(rt.engine)
    run_id = _start(rt, "dead-z")
    _finished(rt, "ancient", ExecutionStatus.SUCCESS, at=START - timedelta(days=90))
    clock.advance(TIMEOUT + GRACE + 1)  # dataforge.work is not this app's: its time limit

    reaped = app.tasks[REAP_TASK_NAME].apply(kwargs={"scheduled_task_id": None}).get()
    deleted = app.tasks[CLEANUP_TASK_NAME].apply().get()

    assert reaped == {"examined": 1, "alive": 0, "lost": [run_id]}
    assert deleted == 1
    rt.engine.dispose()


def test_the_celery_reaper_reads_a_task_overlap_policy(tmp_path: Path) -> None:
    app = Celery("maint-policy")
    clock = ManualClock(START)
    rt = setup(app, _settings(tmp_path / "p.db"), registry=TaskRegistry(), clock=clock)
    create_all(rt.engine)

    @app.task(name="dataforge.free", shared=False, overlap_policy="allow")
    def free() -> None: ...

    run_id = _start(rt, "free-1", task="dataforge.free")
    clock.advance(GRACE + 1)
    assert app.tasks[REAP_TASK_NAME].apply().get()["lost"] == []
    clock.advance(TIMEOUT)
    assert app.tasks[REAP_TASK_NAME].apply().get()["lost"] == [run_id]
    rt.engine.dispose()


def test_the_celery_reaper_spares_a_lockless_run_of_a_task_it_does_not_import(
    tmp_path: Path,
) -> None:
    app = Celery("maint-foreign")
    clock = ManualClock(START)
    rt = setup(app, _settings(tmp_path / "f.db"), registry=TaskRegistry(), clock=clock)
    create_all(rt.engine)
    run_id = _start(rt, "foreign-1", task="other.app.task")  # holds no lock here
    clock.advance(GRACE + 1)
    assert app.tasks[REAP_TASK_NAME].apply().get()["lost"] == []
    assert _row(rt, run_id).status is ExecutionStatus.RUNNING
    rt.engine.dispose()


def test_a_host_prefix_does_not_break_setup(tmp_path: Path) -> None:
    app = Celery("maint-prefix")
    setup(app, _settings(tmp_path / "p.db", task_name_prefix="myapp."), registry=TaskRegistry())
    assert REAP_TASK_NAME in app.tasks


def test_system_tasks_are_described_whatever_the_host_prefix(tmp_path: Path) -> None:
    registry = TaskRegistry()
    setup(
        Celery("maint-exempt"),
        _settings(tmp_path / "e.db", task_name_prefix="myapp."),
        registry=registry,
    )
    assert REAP_TASK_NAME in registry


# ---------------------------------------------------------------- system schedules


def test_ensure_maintenance_schedules_is_idempotent(runtime: Runtime) -> None:
    assert ensure_maintenance_schedules(runtime) == [REAP_TASK_NAME, CLEANUP_TASK_NAME]
    assert ensure_maintenance_schedules(runtime) == []
    with runtime.session() as session:
        rows = store.list_schedules(session).items
        found = {row.task_name: (row.interval_seconds, row.is_system) for row in rows}
    assert found == {REAP_TASK_NAME: (60, True), CLEANUP_TASK_NAME: (3600, True)}


def test_a_scheduled_maintenance_run_leaves_a_finished_history_row(tmp_path: Path) -> None:
    # the scheduler inserts a pending row per slot; a plain Celery task would leave it
    # pending for ever, a DataForgeTask moves it to running and on to success
    from dataforge_scheduler.core.enums import ExecutionStatus
    from dataforge_scheduler.sql.store import get_execution_by_celery_id

    app = Celery("maint-history")
    rt = setup(app, _settings(tmp_path / "h.db"), registry=TaskRegistry())
    create_all(rt.engine)
    ensure_maintenance_schedules(rt)
    with rt.session() as session:
        reaper = store.get_schedule_by_name(session, REAP_TASK_NAME)
        reaper_id = reaper.id
    result = app.tasks[REAP_TASK_NAME].apply(kwargs={"scheduled_task_id": reaper_id})
    assert result.get()["lost"] == []
    # no worker here: the history writer a worker runs is run by hand
    assert HistoryWriter(rt).run_once() == 2  # the run's start and its end
    with rt.session() as session:
        row = get_execution_by_celery_id(session, result.id)
        assert row is not None
        assert row.status is ExecutionStatus.SUCCESS
        assert row.scheduled_task_id == reaper_id
        assert store.get_schedule(session, reaper_id).success_count == 1
    rt.engine.dispose()


def test_retention_deletes_audit_entries_older_than_audit_retention_days(
    runtime: Runtime, clock: ManualClock
) -> None:
    days = runtime.settings.audit_retention_days
    now = clock.now()
    with runtime.session() as session:
        for age_days, target in ((days + 1, 1), (days + 30, 2), (days - 1, 3), (0, 4)):
            store.record_audit(
                session,
                principal="key:1",
                action="update",
                target_type="task",
                target_id=target,
                before=None,
                after={"n": target},
                request_id=None,
                now=now - timedelta(days=age_days),
            )
    assert cleanup_audit(runtime, batch_size=1) == 2  # batches of one, until done
    with runtime.session() as session:
        left = store.list_audit(session, page=1, page_size=10)
    assert sorted(entry.target_id for entry in left.items) == [3, 4]
    assert cleanup_audit(runtime) == 0
