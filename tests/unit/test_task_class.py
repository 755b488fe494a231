"""DataForgeTask and the execution-history handlers, in-process (no services).

A real Celery worker runs in a thread of the test process (``start_worker``, threads
pool, ``memory://`` broker), on SQLite and the in-memory lock manager and log bus; not
eager mode, whose signal and retry semantics differ (docs/internals.md §14). The
main-process paths (worker lost, revoked) are driven by sending the signals from a
thread with no run, as the prefork parent does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from billiard.exceptions import WorkerLostError
from celery import Celery, signals, states
from celery.app.task import Context
from celery.contrib.testing.worker import start_worker
from celery.exceptions import Ignore, InvalidTaskError, Retry
from tests.runs import finish

from dataforge_scheduler.celery.outcomes import TERMINATED, outcome_of
from dataforge_scheduler.celery.renewal import LockWatchdog
from dataforge_scheduler.celery.signals import connect_signals
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.core.context import (
    LockHold,
    RunContext,
    bind_run,
    current_run,
    reset_run,
)
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.core.journal import StartRecord
from dataforge_scheduler.core.ports import Acquired, LockOwner
from dataforge_scheduler.errors import (
    BackendUnavailable,
    ConfigurationError,
    LockLost,
    LockNotAcquired,
)
from dataforge_scheduler.memory.backend import MemoryBackend
from dataforge_scheduler.memory.journal import MemoryRunJournal
from dataforge_scheduler.memory.locks import MemoryLockManager
from dataforge_scheduler.memory.logbus import MemoryLogBus
from dataforge_scheduler.redis.keys import Keys, schedule_scope, task_name_scope
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import create_engine, make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution, create_all
from dataforge_scheduler.wiring import setup

WAIT = 10.0


class CountingLogBus(MemoryLogBus):
    """Counts append round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    def append(self, execution_id: int, lines: Any) -> int:
        self.appends += 1
        return super().append(execution_id, lines)


@dataclass
class Harness:
    app: Celery
    runtime: Runtime
    bodies: list[tuple[str, Any]] = field(default_factory=list)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    ended: threading.Condition = field(default_factory=threading.Condition)

    def on_postrun(self, **_: Any) -> None:
        with self.ended:
            self.ended.notify_all()

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(name, threading.Event())

    @property
    def bus(self) -> CountingLogBus:
        bus = self.runtime.logbus
        assert isinstance(bus, CountingLogBus)
        return bus

    def row(self, celery_task_id: str) -> TaskExecution | None:
        with self.runtime.session_factory() as session:
            return store.get_execution_by_celery_id(session, celery_task_id)

    @property
    def memory_backend(self) -> MemoryBackend:
        backend = self.runtime.backend
        assert isinstance(backend, MemoryBackend)
        return backend

    def finished(self, celery_task_id: str) -> TaskExecution:
        """The run's row once it is finished: re-read after every task end (the
        ``task_postrun`` signal) or every 50 ms (ends recorded outside a run), up to
        ``WAIT`` seconds."""
        deadline = time.monotonic() + WAIT
        while (remaining := deadline - time.monotonic()) > 0:
            row = self.row(celery_task_id)
            if row is not None and row.status.finished:
                return row
            with self.ended:
                self.ended.wait(min(remaining, 0.05))
        raise AssertionError(f"run {celery_task_id} did not finish in {WAIT} s")

    def rows(self) -> list[TaskExecution]:
        with self.runtime.session_factory() as session:
            return list(session.scalars(sa.select(TaskExecution).order_by(TaskExecution.id)))

    def schedule(self, **fields: Any) -> ScheduledTask:
        values = {"name": "s", "task_type": "manual", "task_name": "u.ok", **fields}
        with self.runtime.session() as session:
            return store.create_schedule(
                session, values, now=datetime.now(UTC), default_timezone="UTC"
            )

    def schedule_row(self, schedule_id: int) -> ScheduledTask:
        with self.runtime.session_factory() as session:
            found = session.get(ScheduledTask, schedule_id)
            assert found is not None
            return found


def _define_tasks(app: Celery, h: Harness) -> None:
    @app.task(base=DataForgeTask, bind=True, name="u.ok")
    def ok(self: DataForgeTask, scheduled_task_id: int | None = None, lines: int = 2) -> dict:
        h.bodies.append(("ok", self.request.id))
        for number in range(lines):
            task_log("line", number)
        return {"ok": True}

    @app.task(base=DataForgeTask, bind=True, name="u.flaky", max_retries=3)
    def flaky(self: DataForgeTask, scheduled_task_id: int | None = None) -> str:
        h.bodies.append(("flaky", self.request.retries))
        task_log("attempt", self.request.retries)
        if self.request.retries < 2:
            raise self.retry(exc=ValueError(f"boom {self.request.retries}"), countdown=0)
        return "third time lucky"

    @app.task(base=DataForgeTask, name="u.fail")
    def fail(scheduled_task_id: int | None = None) -> None:
        task_log("about to fail")
        raise RuntimeError("kaput")


def _define_more_tasks(app: Celery, h: Harness) -> None:
    @app.task(base=DataForgeTask, name="u.allow", overlap_policy="allow")
    def allow(scheduled_task_id: int | None = None) -> str:
        h.bodies.append(("allow", scheduled_task_id))
        return "ran"

    @app.task(base=DataForgeTask, name="u.ignore")
    def ignore() -> None:
        raise Ignore()

    @app.task(base=DataForgeTask, bind=True, name="u.extend", lock_auto_renew=False)
    def extend(self: DataForgeTask) -> None:
        self.extend_lock(ttl=30)
        h.gate("extend-started").set()
        h.gate("extend-go").wait(WAIT)
        self.extend_lock()

    @app.task(
        base=DataForgeTask,
        bind=True,
        name="u.aio",
        autoretry_for=(KeyError,),
        max_retries=1,
        retry_kwargs={"countdown": 0},
    )
    async def aio(self: DataForgeTask) -> str:
        task_log("attempt", self.request.retries)
        await asyncio.to_thread(task_log, "from a thread")
        await asyncio.create_task(_log_later("from a task"))
        if self.request.retries == 0:
            raise KeyError("first attempt")
        return "async done"

    @app.task(base=DataForgeTask, bind=True, name="u.backoff", default_retry_delay=0.05)
    def backoff(self: DataForgeTask) -> None:
        if self.request.retries == 0:
            raise self.retry(exc=ValueError("once"))

    @app.task(name="u.plain")
    def plain() -> str:
        return "plain"

    @app.task(base=DataForgeTask, name="u.requeue", acks_late=True, reject_on_worker_lost=True)
    def requeue(scheduled_task_id: int | None = None) -> str:
        return "ran again"


async def _log_later(text: str) -> None:
    await asyncio.sleep(0)
    task_log(text)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    database = Path(tmp_path_factory.mktemp("runs")) / "runs.db"
    app = Celery("unit-runs")
    settings = Settings(
        database_url=f"sqlite:///{database}",
        redis_url="memory://",
        celery_broker_url="memory://",
        celery_result_backend="cache+memory://",
        celery_task_default_max_retries=4,
        celery_task_retry_delay=7,
        log_flush_interval=0.01,
        log_console_echo=False,
    )
    runtime = setup(app, settings, registry=TaskRegistry())
    app.conf.broker_transport_options = {"polling_interval": 0.01}  # memory:// polls
    create_all(runtime.engine)
    h = Harness(app, runtime)
    # connected after setup()'s handlers, so it runs once the run's row is written
    signals.task_postrun.connect(h.on_postrun, weak=False, dispatch_uid="unit-runs-ended")
    _define_tasks(app, h)
    _define_more_tasks(app, h)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        yield h
    signals.task_postrun.disconnect(dispatch_uid="unit-runs-ended")
    runtime.close()


@pytest.fixture
def h(harness: Harness) -> Iterator[Harness]:
    # fresh in-memory backends per test (schedule ids restart at 1 on SQLite)
    backend = MemoryBackend(clock=harness.runtime.clock, lock_key=Keys("dataforge").lock)
    backend.logbus = CountingLogBus()
    backend.journal = MemoryRunJournal(
        locks=backend.locks, logbus=backend.logbus, clock=harness.runtime.clock
    )
    harness.runtime._backend = backend
    harness.bodies.clear()
    harness.gates.clear()
    yield harness
    with harness.runtime.session() as session:
        session.execute(sa.delete(TaskExecution))
        session.execute(sa.delete(ScheduledTask))


def _claim(h: Harness, schedule: ScheduledTask, celery_task_id: str) -> TaskExecution:
    with h.runtime.session() as session:
        row = TaskExecution(
            scheduled_task_id=schedule.id,
            scheduled_for=datetime(2030, 1, 1, tzinfo=UTC),
            task_name=schedule.task_name,
            celery_task_id=celery_task_id,
            trigger=ExecutionTrigger.SCHEDULE,
            kwargs={"scheduled_task_id": schedule.id},
        )
        session.add(row)
    return row


# ---------------------------------------------------------------- runs


def test_a_run_costs_the_pool_no_sql_and_the_writer_two_statements(h: Harness) -> None:
    schedule = h.schedule()
    claimed = _claim(h, schedule, "claimed-1")
    statements: list[tuple[str, str]] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        thread = threading.current_thread()
        if thread is not threading.main_thread():
            statements.append((thread.name, statement.split()[0].upper()))

    sa.event.listen(h.runtime.engine, "before_cursor_execute", count)
    try:
        h.app.tasks["u.ok"].apply_async(
            kwargs={"scheduled_task_id": schedule.id, "lines": 3},
            task_id="claimed-1",
            headers={"df_trigger": "schedule"},
        )
        row = h.finished("claimed-1")
    finally:
        sa.event.remove(h.runtime.engine, "before_cursor_execute", count)

    assert row.id == claimed.id
    assert row.status is ExecutionStatus.SUCCESS
    assert row.trigger is ExecutionTrigger.SCHEDULE
    assert row.result == {"ok": True}
    assert row.log_output == "line 0\nline 1\nline 2"
    assert row.worker_pid is not None
    work = [(thread, s) for thread, s in statements if s not in {"BEGIN", "COMMIT", "ROLLBACK"}]
    # the pool's threads run none; the history writer writes the start and the end of
    # the run as one row write, then the schedule's counters
    assert work == [
        ("dataforge-history-writer", "INSERT"),
        ("dataforge-history-writer", "UPDATE"),
    ]
    assert h.bus.appends == 1  # three lines, pushed in the run's end step
    assert h.bus.ended("claimed-1") == "success"
    assert h.runtime.locks.get(schedule_scope(schedule.id)) is None
    counted = h.schedule_row(schedule.id)
    assert (counted.run_count, counted.success_count, counted.last_execution_id) == (1, 1, row.id)


def test_a_send_without_a_pending_row_creates_one(h: Harness) -> None:
    result = h.app.tasks["u.ok"].delay(lines=1)
    row = h.finished(result.id)
    assert row.trigger is ExecutionTrigger.EXTERNAL
    assert row.kwargs == {"lines": 1}
    assert row.scheduled_task_id is None
    assert [r.id for r in h.rows()] == [row.id]


def test_a_held_lock_skips_the_body_and_names_the_holder(h: Harness) -> None:
    schedule = h.schedule()
    scope = schedule_scope(schedule.id)
    other = LockOwner(celery_task_id="other-run", execution_id=99, hostname="w@h", pid=7)
    h.runtime.locks.acquire(scope, other, ttl=60)

    result = h.app.tasks["u.ok"].delay(scheduled_task_id=schedule.id)
    with pytest.raises(LockNotAcquired, match="held by task other-run"):
        result.get(timeout=WAIT, interval=0.01)
    row = h.finished(result.id)

    assert h.bodies == []
    assert row.status is ExecutionStatus.SKIPPED
    assert row.result["skipped"] == "locked"
    assert row.result["holder"]["celery_task_id"] == "other-run"
    assert row.result["holder"]["execution_id"] == 99
    assert "execution 99 on w@h, pid 7" in (row.error or "")
    held = h.runtime.locks.get(scope)
    assert held is not None
    assert held.celery_task_id == "other-run", "a skipped run must not release another's lock"
    assert h.schedule_row(schedule.id).run_count == 0


def test_a_retry_reenters_its_own_lock_and_keeps_one_row(h: Harness) -> None:
    schedule = h.schedule(task_name="u.flaky")
    result = h.app.tasks["u.flaky"].delay(scheduled_task_id=schedule.id)
    assert result.get(timeout=WAIT, interval=0.01) == "third time lucky"
    row = h.finished(result.id)

    assert [body for body in h.bodies if body[0] == "flaky"] == [
        ("flaky", 0),
        ("flaky", 1),
        ("flaky", 2),
    ]
    assert row.status is ExecutionStatus.SUCCESS
    assert row.retries == 2
    lines = (row.log_output or "").split("\n")
    assert lines[0] == "attempt 0"
    assert lines[-1] == "attempt 2"
    assert sum("retrying in" in line for line in lines) == 2
    assert len(h.rows()) == 1
    assert h.runtime.locks.get(schedule_scope(schedule.id)) is None


def test_a_failure_records_the_error_and_traceback(h: Harness) -> None:
    schedule = h.schedule(task_name="u.fail")
    result = h.app.tasks["u.fail"].delay(scheduled_task_id=schedule.id)
    row = h.finished(result.id)
    assert row.status is ExecutionStatus.FAILED
    assert row.error == "RuntimeError: kaput"
    assert "raise RuntimeError" in (row.traceback or "")
    assert row.log_output == "about to fail"
    counted = h.schedule_row(schedule.id)
    assert (counted.run_count, counted.failure_count) == (1, 1)
    assert h.runtime.locks.get(schedule_scope(schedule.id)) is None


def test_a_duplicate_delivery_writes_nothing_and_runs_nothing(h: Harness) -> None:
    first = h.app.tasks["u.ok"].delay()
    before = h.finished(first.id)
    ended = threading.Event()

    def on_postrun(task_id: str = "", state: str | None = None, **_: Any) -> None:
        if task_id == first.id and state == states.IGNORED:
            ended.set()

    signals.task_postrun.connect(on_postrun, weak=False)
    try:
        h.app.tasks["u.ok"].apply_async(task_id=first.id)
        assert ended.wait(WAIT)
    finally:
        signals.task_postrun.disconnect(on_postrun)
    after = h.row(first.id)
    assert after is not None
    assert (after.status, after.finished_at) == (before.status, before.finished_at)
    assert len(h.bodies) == 1


def test_overlap_allow_runs_while_the_lock_is_held(h: Harness) -> None:
    schedule = h.schedule(task_name="u.allow")
    h.runtime.locks.acquire(schedule_scope(schedule.id), LockOwner("other"), ttl=60)
    result = h.app.tasks["u.allow"].delay(scheduled_task_id=schedule.id)
    assert result.get(timeout=WAIT, interval=0.01) == "ran"
    assert h.finished(result.id).status is ExecutionStatus.SUCCESS


def test_a_schedule_that_allows_overlap_runs_without_the_lock(h: Harness) -> None:
    schedule = h.schedule(overlap_policy="allow")
    h.runtime.locks.acquire(schedule_scope(schedule.id), LockOwner("other"), ttl=60)
    # the beat and "run now" say the schedule's policy in the message
    result = h.app.tasks["u.ok"].apply_async(
        kwargs={"scheduled_task_id": schedule.id}, headers={"df_overlap": "allow"}
    )
    assert result.get(timeout=WAIT, interval=0.01) == {"ok": True}
    assert h.finished(result.id).status is ExecutionStatus.SUCCESS


def test_a_plain_delay_of_an_allow_schedule_takes_the_lock_without_the_header(
    h: Harness,
) -> None:
    # the worker never asks the database at a run's start: a send that does not carry
    # the schedule's policy runs by the task's own
    schedule = h.schedule(overlap_policy="allow")
    h.runtime.locks.acquire(schedule_scope(schedule.id), LockOwner("other"), ttl=60)
    result = h.app.tasks["u.ok"].delay(scheduled_task_id=schedule.id)
    assert h.finished(result.id).status is ExecutionStatus.SKIPPED


def test_ignore_raised_by_the_body_is_recorded_as_skipped(h: Harness) -> None:
    result = h.app.tasks["u.ignore"].delay()
    row = h.finished(result.id)
    assert row.status is ExecutionStatus.SKIPPED
    assert "raised Ignore" in (row.error or "")
    assert h.runtime.locks.get(task_name_scope("u.ignore")) is None


def test_extend_lock_raises_lock_lost_after_a_force_release(h: Harness) -> None:
    scope = task_name_scope("u.extend")
    result = h.app.tasks["u.extend"].delay()
    assert h.gate("extend-started").wait(WAIT)
    held = h.runtime.locks.get(scope)
    assert held is not None
    assert held.ttl_seconds is not None
    assert held.ttl_seconds > 20  # extend_lock(ttl=30) took effect
    h.runtime.locks.force_release(scope)
    h.gate("extend-go").set()

    row = h.finished(result.id)
    assert row.status is ExecutionStatus.FAILED
    assert (row.error or "").startswith("LockLost:")


def test_an_async_body_logs_from_threads_and_tasks_and_autoretries(h: Harness) -> None:
    result = h.app.tasks["u.aio"].delay()
    assert result.get(timeout=WAIT, interval=0.01) == "async done"
    row = h.finished(result.id)
    assert row.retries == 1
    log = (row.log_output or "").split("\n")
    assert log[:3] == ["attempt 0", "from a thread", "from a task"]
    assert log[-3:] == ["attempt 1", "from a thread", "from a task"]


def test_retry_without_a_countdown_backs_off_within_the_delay(h: Harness) -> None:
    countdowns: list[float] = []

    def on_retry(reason: Retry | None = None, **_: Any) -> None:
        countdowns.append(float(reason.when))  # type: ignore[union-attr,arg-type]

    signals.task_retry.connect(on_retry, weak=False)
    try:
        result = h.app.tasks["u.backoff"].delay()
        result.get(timeout=WAIT, interval=0.01)
    finally:
        signals.task_retry.disconnect(on_retry)
    assert len(countdowns) == 1
    assert 0 <= countdowns[0] <= 0.05


def test_a_plain_task_is_untouched(h: Harness) -> None:
    assert h.app.tasks["u.plain"].delay().get(timeout=WAIT, interval=0.01) == "plain"
    assert h.rows() == []


def test_a_database_without_the_tables_never_fails_the_task_and_loses_no_history(
    h: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tableless = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    working = h.runtime.session_factory
    h.runtime._session_factory = make_session_factory(tableless)
    try:
        with caplog.at_level(logging.WARNING, logger="dataforge_scheduler.history"):
            result = h.app.tasks["u.ok"].delay(lines=1)
            assert result.get(timeout=WAIT, interval=0.01) == {"ok": True}
            _wait_for(
                lambda: any("lacks the library's schema" in r.getMessage() for r in caplog.records),
                "the history writer to report the missing tables",
            )
        assert h.runtime.backend.journal.undrained([result.id]) == {result.id}
    finally:
        h.runtime._session_factory = working
        tableless.dispose()
    # the tables are back: the records the writer kept reach them
    row = h.finished(result.id)
    assert row.status is ExecutionStatus.SUCCESS
    assert row.log_output == "line 0"


def test_the_start_statement_orders_overlapping_attempts(h: Harness) -> None:
    schedule = h.schedule(overlap_policy="allow")
    now = datetime.now(UTC)

    def begin(retries: int, scheduled_task_id: int | None = schedule.id) -> Any:
        with h.runtime.session() as session:
            return store.start_run(
                session,
                celery_task_id="overlap",
                task_name="u.ok",
                scheduled_task_id=scheduled_task_id,
                trigger="external",
                worker_hostname="w",
                worker_pid=1,
                kwargs={},
                retries=retries,
                now=now,
            )

    first = begin(0)
    assert first.overlap_policy == "allow"
    assert begin(0) is None  # a redelivery of the running attempt
    second = begin(1)  # the retry started before attempt 0 recorded `retrying`
    assert second.execution_id == first.execution_id
    assert h.row("overlap").retries == 1
    with h.runtime.session() as session:
        late = finish(
            session,
            celery_task_id="overlap",
            status=ExecutionStatus.RETRYING,
            now=now,
            error="late",
            attempt=0,
        )
    assert late is None, "a late retrying must not overwrite the running attempt"
    row = h.row("overlap")
    assert row is not None
    assert (row.status, row.retries) == (ExecutionStatus.RUNNING, 1)

    with h.runtime.session() as session:
        dangling = store.start_run(
            session,
            celery_task_id="dangling",
            task_name="u.ok",
            scheduled_task_id=424242,
            trigger="external",
            worker_hostname=None,
            worker_pid=None,
            kwargs={},
            retries=0,
            now=now,
        )
    assert dangling is not None
    assert dangling.scheduled_task_id is None
    assert h.row("dangling").scheduled_task_id is None
    assert dangling.overlap_policy is None


# ---------------------------------------------------------------- main process


def _running(
    h: Harness, celery_task_id: str, schedule: ScheduledTask, *, task_name: str = "u.ok"
) -> TaskExecution:
    """A run that started as a worker starts one (through the outbox), in the database."""
    record = StartRecord(
        celery_task_id=celery_task_id,
        task_name=task_name,
        scheduled_task_id=schedule.id,
        trigger="schedule",
        worker_hostname="w",
        worker_pid=1,
        kwargs={},
        retries=0,
        at=datetime.now(UTC),
    )
    assert not h.runtime.backend.journal.start(record, lock=None, state_ttl=600).duplicate
    _wait_for(lambda: h.row(celery_task_id) is not None, "the start to reach the database")
    row = h.row(celery_task_id)
    assert row is not None
    return row


def test_a_lost_child_is_recorded_lost_with_its_logs_and_its_lock_freed(h: Harness) -> None:
    schedule = h.schedule()
    row = _running(h, "killed", schedule)
    scope = schedule_scope(schedule.id)
    h.runtime.locks.acquire(scope, LockOwner("killed"), ttl=60)
    h.runtime.logbus.append("killed", ["before the crash"])
    task = h.app.tasks["u.ok"]

    for _ in range(2):  # sent twice on a hard time limit: the second is a no-op
        signals.task_failure.send(
            sender=task,
            task_id="killed",
            exception=WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)."),
            args=(),
            kwargs={"scheduled_task_id": schedule.id},
            traceback=None,
            einfo=None,
        )
    lost = h.finished("killed")
    assert lost.id == row.id
    assert lost.status is ExecutionStatus.LOST
    assert (lost.error or "").startswith("WorkerLostError")
    assert lost.log_output == "before the crash"
    assert h.bus.ended("killed") == "lost"
    assert h.runtime.locks.get(scope) is None
    assert h.schedule_row(schedule.id).failure_count == 1


def _wait_for(condition: Any, what: str) -> None:
    """Wait until ``condition()`` holds, re-checking every 10 ms, for ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {WAIT} s")
        time.sleep(0.01)


def test_a_task_the_worker_does_not_know_fails_its_row_without_counting(h: Harness) -> None:
    schedule = h.schedule(task_name="u.not_imported")
    _claim(h, schedule, "unknown-1")

    h.app.send_task(
        "u.not_imported", task_id="unknown-1", kwargs={"scheduled_task_id": schedule.id}
    )
    row = h.finished("unknown-1")

    assert row.status is ExecutionStatus.FAILED
    assert "task 'u.not_imported' is not registered on worker" in (row.error or "")
    counted = h.schedule_row(schedule.id)
    assert (counted.run_count, counted.failure_count) == (0, 0)  # it never ran
    assert (counted.last_status, counted.last_execution_id) == (ExecutionStatus.FAILED, row.id)


def test_a_message_the_worker_rejects_fails_its_row(h: Harness) -> None:
    schedule = h.schedule()
    _claim(h, schedule, "rejected-1")

    class Consumer:  # what the signal's sender offers: the app and the worker's name
        app = h.app
        hostname = "w@test"

    @dataclass
    class Message:
        headers: dict[str, Any]

    signals.task_rejected.send(
        sender=Consumer(),
        message=Message({"id": "rejected-1", "task": "u.ok"}),
        exc=InvalidTaskError("bad eta"),
    )
    row = h.row("rejected-1")
    assert row is not None
    assert row.status is ExecutionStatus.FAILED
    assert (
        row.error == "worker w@test rejected the message of task 'u.ok': InvalidTaskError: bad eta"
    )


class _ReplyLostJournal(MemoryRunJournal):
    """The start step runs in Redis (the lock is taken), then its reply times out."""

    def start(self, record: Any, *, lock: Any, state_ttl: float) -> Any:
        super().start(record, lock=lock, state_ttl=state_ttl)
        raise BackendUnavailable("timed out reading the reply (test)")


def test_a_lock_taken_when_its_reply_was_lost_is_released(h: Harness) -> None:
    backend = h.memory_backend
    backend.journal = _ReplyLostJournal(
        locks=backend.locks, logbus=backend.logbus, clock=h.runtime.clock
    )
    schedule = h.schedule()
    scope = schedule_scope(schedule.id)

    result = h.app.tasks["u.ok"].delay(scheduled_task_id=schedule.id)
    row = h.finished(result.id)

    assert row.status is ExecutionStatus.FAILED
    assert (row.error or "").startswith("BackendUnavailable")
    assert h.bodies == []
    _wait_for(lambda: h.runtime.locks.get(scope) is None, "the release of the leaked lock")


def test_a_requeued_copy_after_a_lost_worker_runs_again(h: Harness) -> None:
    schedule = h.schedule(task_name="u.requeue")
    row = _running(h, "requeued", schedule, task_name="u.requeue")  # the killed attempt
    scope = schedule_scope(schedule.id)
    h.runtime.locks.acquire(scope, LockOwner("requeued"), ttl=60)
    task = h.app.tasks["u.requeue"]

    # acks_late + reject_on_worker_lost: Celery requeues the message, so the row stays
    # open for the copy (Celery 5.7 does not even report this loss; older ones did)
    signals.task_failure.send(
        sender=task,
        task_id="requeued",
        exception=WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)."),
        args=(),
        kwargs={"scheduled_task_id": schedule.id},
        traceback=None,
        einfo=None,
    )
    waiting = h.row("requeued")
    assert waiting is not None
    assert waiting.status is ExecutionStatus.RUNNING
    assert h.runtime.locks.get(scope) is None

    # the copy arrives: same id, same attempt, flagged redelivered by the broker
    assert _deliver(task, "requeued", schedule_id=schedule.id, redelivered=True) is False
    _wait_for(
        lambda: getattr(h.row("requeued"), "worker_hostname", None) == "w2@host",
        "the copy's start to reach the database",
    )
    restarted = h.row("requeued")
    assert restarted is not None
    assert restarted.id == row.id
    # a plain duplicate of a task that does not requeue on loss is still refused
    _running(h, "plain-dup", schedule)
    assert _deliver(h.app.tasks["u.ok"], "plain-dup", schedule_id=schedule.id, redelivered=True)


def _deliver(task: Any, task_id: str, *, schedule_id: int, redelivered: bool) -> bool:
    """Start a delivery of ``task_id`` as a worker would; True when it is a duplicate."""
    task.push_request(
        id=task_id, retries=0, hostname="w2@host", delivery_info={"redelivered": redelivered}
    )
    try:
        kwargs = {"scheduled_task_id": schedule_id}
        signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=(), kwargs=kwargs)
        run = current_run()
        assert run is not None
        assert run.state.token is not None
        reset_run(run.state.token)
        return run.state.duplicate
    finally:
        task.pop_request()


def test_a_revoked_run_is_recorded_revoked(h: Harness) -> None:
    schedule = h.schedule()
    _claim(h, schedule, "revoked-1")
    request = Context({"id": "revoked-1", "kwargs": {"scheduled_task_id": schedule.id}})
    signals.task_revoked.send(
        sender=h.app.tasks["u.ok"], request=request, terminated=False, signum=None, expired=True
    )
    row = h.finished("revoked-1")
    assert row.status is ExecutionStatus.REVOKED
    assert row.error == "expired before it ran"
    assert h.schedule_row(schedule.id).run_count == 0


# ---------------------------------------------------------------- class behaviour


def test_retry_defaults_come_from_settings_unless_the_task_sets_them(harness: Harness) -> None:
    app = harness.app

    @app.task(base=DataForgeTask, name="u.defaults")
    def defaults() -> None: ...

    @app.task(base=DataForgeTask, name="u.explicit", max_retries=1, default_retry_delay=2)
    def explicit() -> None: ...

    assert (defaults.max_retries, defaults.default_retry_delay) == (4, 7)
    assert (explicit.max_retries, explicit.default_retry_delay) == (1, 2)


@pytest.mark.parametrize("retries", [0, 1, 3, 6, 12, 40])
def test_backoff_has_full_jitter_under_the_cap(harness: Harness, retries: int) -> None:
    task = harness.app.tasks["u.ok"]  # default_retry_delay 7 from settings
    ceiling = min(600.0, 7 * 2**retries)
    samples = [task.backoff_countdown(retries) for _ in range(300)]
    assert all(0 <= value <= ceiling for value in samples)
    assert max(samples) > ceiling / 2  # full jitter spreads over the range


def test_a_task_time_limit_gets_a_soft_limit_below_it(harness: Harness) -> None:
    app = harness.app

    @app.task(base=DataForgeTask, name="u.limit30", time_limit=30)
    def limit30() -> None: ...

    @app.task(base=DataForgeTask, name="u.limit1", time_limit=1)
    def limit1() -> None: ...

    @app.task(base=DataForgeTask, name="u.both", time_limit=30, soft_time_limit=10)
    def both() -> None: ...

    assert limit30.soft_time_limit == 27
    assert limit1.soft_time_limit == pytest.approx(0.9)
    assert both.soft_time_limit == 10


@pytest.mark.parametrize("policy", ["queue", "buffer_one", "cancel_other"])
def test_a_task_class_policy_is_skip_or_allow(policy: str) -> None:
    # buffer_one and cancel_other are the beat's: set on a schedule, or as the task's
    # registered default; a class attribute could not apply them
    with pytest.raises(ConfigurationError, match="overlap_policy must be 'skip' or 'allow'") as e:
        type("Bad", (DataForgeTask,), {"overlap_policy": policy})
    assert "register_task" in str(e.value)


def test_connect_signals_is_idempotent(harness: Harness) -> None:
    before = len(signals.task_prerun.receivers)
    connect_signals()
    connect_signals()
    assert len(signals.task_prerun.receivers) == before


def _run(**overrides: Any) -> RunContext:
    values: dict[str, Any] = {
        "celery_task_id": "t1",
        "task_name": "u.ok",
        "execution_id": 1,
        "scheduled_task_id": None,
        "retries": 0,
        "runtime": None,
        "log": None,
        "echo": False,
    }
    values.update(overrides)
    return RunContext(**values)


def test_outcomes_map_every_final_state() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    run = _run()
    assert outcome_of(run, states.SUCCESS, retval=5, now=now).status is ExecutionStatus.SUCCESS
    assert outcome_of(run, None, retval=None, now=now).error == TERMINATED
    assert outcome_of(run, states.REJECTED, retval="x", now=now).status is ExecutionStatus.FAILED
    retry = Retry(exc=ValueError("v"), when=now + timedelta(seconds=30))
    retrying = outcome_of(run, states.RETRY, retval=retry, now=now)
    assert retrying.status is ExecutionStatus.RETRYING
    assert retrying.countdown == 30
    assert retrying.error == "ValueError: v"
    run.state.error = "RuntimeError: stashed"
    assert outcome_of(run, states.FAILURE, retval=RuntimeError("x"), now=now).error == (
        "RuntimeError: stashed"
    )


class _TrackingLocks(MemoryLockManager):
    def __init__(self) -> None:
        super().__init__()
        self.extended = threading.Event()

    def extend(self, scope: str, token: str, *, ttl: float) -> None:
        try:
            super().extend(scope, token, ttl=ttl)
        finally:
            self.extended.set()


@dataclass
class _Runtime:
    locks: Any


def test_the_watchdog_renews_the_lock_and_notices_when_it_is_lost(harness: Harness) -> None:
    locks = _TrackingLocks()
    taken = locks.acquire("task:1", LockOwner("t1"), ttl=60)
    assert isinstance(taken, Acquired)
    written: list[str] = []

    class _Log:
        def write(self, lines: list[str]) -> None:
            written.extend(lines)

    run = _run(runtime=_Runtime(locks), log=_Log())
    run.state.lock = LockHold(scope="task:1", token=taken.token, ttl=0.15)
    watchdog = LockWatchdog(run).start()
    try:
        assert locks.extended.wait(WAIT)
        locks.force_release("task:1")
        locks.extended.clear()
        assert locks.extended.wait(WAIT)
        hold = run.state.lock
        _wait_for(lambda: hold.lost, "the watchdog to notice the lost lock")
    finally:
        watchdog.stop()
    # the run's own log says so, once: its history shows why another run overlapped
    assert len(written) == 1
    assert "task:1 was lost" in written[0]
    task = harness.app.tasks["u.ok"]
    task.extend_lock()  # outside a run: nothing to extend
    token = bind_run(run)
    try:
        with pytest.raises(LockLost, match="was lost"):
            task.extend_lock()
    finally:
        reset_run(token)
