"""The execution store's state rules on SQLite: which delivery may start a row, a real
outcome reversing a wrong ``lost`` verdict, a finish that keeps the stored log, and a
run that never started not counting as a run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session
from tests.runs import finish, manual, start

from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def session(sqlite_engine: Any) -> Iterator[Session]:
    with make_session_factory(sqlite_engine)() as session:
        yield session


@pytest.fixture
def schedule(session: Session) -> ScheduledTask:
    row = store.create_schedule(
        session,
        {"name": "sync", "task_type": "manual", "task_name": "app.sync"},
        now=NOW - timedelta(hours=1),
        default_timezone="UTC",
    )
    session.commit()
    return row


def _begin(session: Session, retries: int, **overrides: Any) -> TaskExecution | None:
    arguments: dict[str, Any] = {
        "celery_task_id": "c1",
        "task_name": "app.sync",
        "scheduled_task_id": None,
        "trigger": "external",
        "worker_hostname": "w1",
        "worker_pid": 1,
        "kwargs": {},
        "retries": retries,
        "now": NOW,
    }
    arguments.update(overrides)
    return start(session, **arguments)


def _finish(session: Session, status: ExecutionStatus, **extra: Any) -> TaskExecution | None:
    extra.setdefault("now", NOW + timedelta(seconds=2))
    return finish(session, celery_task_id="c1", status=status, **extra)


def _row(session: Session) -> TaskExecution:
    row = store.get_execution_by_celery_id(session, "c1")
    assert row is not None
    session.refresh(row)
    return row


# ---------------------------------------------------------------- who may start a row


def test_a_repeat_of_an_earlier_attempt_never_restarts_a_retrying_row(session: Session) -> None:
    assert _begin(session, 0) is not None
    retrying = _finish(session, ExecutionStatus.RETRYING, error="boom", attempt=0)
    assert retrying is not None
    assert (retrying.status, retrying.retries) == (ExecutionStatus.RETRYING, 1)

    # a duplicate copy of attempt 0 (visibility timeout, a requeue) arrives
    assert _begin(session, 0, worker_hostname="w2") is None
    row = _row(session)
    assert (row.status, row.retries, row.worker_hostname) == (ExecutionStatus.RETRYING, 1, "w1")

    # the attempt the row waits for starts it
    started = _begin(session, 1, worker_hostname="w3")
    assert started is not None
    assert (started.status, started.retries) == (ExecutionStatus.RUNNING, 1)


def test_a_later_attempt_may_overtake_the_running_earlier_one(session: Session) -> None:
    assert _begin(session, 0) is not None
    assert _begin(session, 1) is not None  # the retry started before 0 recorded retrying
    assert _begin(session, 0) is None
    assert _begin(session, 1) is None  # a redelivery of the running attempt


def test_a_redelivery_after_a_lost_worker_restarts_the_running_attempt(
    session: Session,
) -> None:
    assert _begin(session, 0) is not None
    assert _begin(session, 0, worker_hostname="w2") is None  # a plain duplicate
    again = _begin(session, 0, worker_hostname="w2", redelivered=True)
    assert again is not None
    assert (again.status, again.worker_hostname) == (
        ExecutionStatus.RUNNING,
        "w2",
    )
    _finish(session, ExecutionStatus.SUCCESS, attempt=0)
    assert _begin(session, 0, redelivered=True) is None  # never restarts a finished run


# ---------------------------------------------------------------- a wrong lost verdict


def test_the_real_outcome_replaces_a_lost_verdict_of_the_same_attempt(
    session: Session, schedule: ScheduledTask, caplog: pytest.LogCaptureFixture
) -> None:
    assert _begin(session, 0, scheduled_task_id=schedule.id) is not None
    lost = _finish(session, ExecutionStatus.LOST, error="worker lost: its lock is gone")
    assert lost is not None
    session.commit()
    session.refresh(schedule)
    assert (schedule.run_count, schedule.failure_count, schedule.total_runtime_ms) == (1, 1, 2000)

    assert _finish(session, ExecutionStatus.SUCCESS, attempt=1, result=1) is None  # not its attempt
    with caplog.at_level(logging.WARNING, logger="dataforge_scheduler"):
        real = _finish(
            session,
            ExecutionStatus.SUCCESS,
            attempt=0,
            result={"synced": 3},
            now=NOW + timedelta(seconds=5),
        )
    session.commit()

    assert real is not None
    assert (real.status, real.result, real.error) == (ExecutionStatus.SUCCESS, {"synced": 3}, None)
    assert real.duration_ms == 5000
    session.refresh(schedule)
    assert (schedule.run_count, schedule.success_count, schedule.failure_count) == (1, 1, 0)
    assert schedule.total_runtime_ms == 5000
    assert schedule.last_status is ExecutionStatus.SUCCESS
    assert any("lost" in r.getMessage() and "c1" in r.getMessage() for r in caplog.records)
    # the overwrite happens once: the row is no longer lost
    assert _finish(session, ExecutionStatus.FAILED, attempt=0) is None


def test_a_real_failure_after_a_lost_verdict_is_counted_once(
    session: Session, schedule: ScheduledTask
) -> None:
    _begin(session, 0, scheduled_task_id=schedule.id)
    _finish(session, ExecutionStatus.LOST, error="worker lost")
    assert _finish(session, ExecutionStatus.FAILED, attempt=0, error="ValueError: x") is not None
    session.commit()
    session.refresh(schedule)
    assert (schedule.run_count, schedule.success_count, schedule.failure_count) == (1, 0, 1)
    assert _row(session).error == "ValueError: x"


def test_a_finish_from_outside_never_overwrites_a_lost_row(session: Session) -> None:
    _begin(session, 0)
    _finish(session, ExecutionStatus.LOST, error="worker lost")
    assert _finish(session, ExecutionStatus.REVOKED, error="revoked") is None  # no attempt
    assert _row(session).status is ExecutionStatus.LOST


# ---------------------------------------------------------------- logs and counters


def test_a_finish_without_a_log_keeps_the_stored_log(session: Session) -> None:
    _begin(session, 0)
    _finish(session, ExecutionStatus.RETRYING, attempt=0, log_output="attempt 0 said this")
    _begin(session, 1)
    assert _finish(session, ExecutionStatus.LOST, log_output=None) is not None
    assert _row(session).log_output == "attempt 0 said this"


def test_a_run_that_never_started_is_not_counted_as_a_run(
    session: Session, schedule: ScheduledTask
) -> None:
    pending = manual(
        session,
        scheduled_task_id=schedule.id,
        task_name="app.sync",
        celery_task_id="c1",
        kwargs={},
        now=NOW,
    )
    failed = _finish(session, ExecutionStatus.FAILED, error="not sent")
    session.commit()
    session.refresh(schedule)

    assert failed is not None
    assert (schedule.run_count, schedule.failure_count, schedule.total_runtime_ms) == (0, 0, 0)
    assert (schedule.last_status, schedule.last_execution_id) == (
        ExecutionStatus.FAILED,
        pending.id,
    )
    assert schedule.last_run_at is None


def test_a_manual_run_records_when_it_was_sent(session: Session) -> None:
    execution = manual(
        session,
        scheduled_task_id=None,
        task_name="app.sync",
        celery_task_id="c1",
        kwargs={},
        now=NOW,
    )
    store.mark_sent(session, [execution.id], now=NOW + timedelta(seconds=1))
    store.mark_sent(session, [execution.id], now=NOW + timedelta(seconds=9))  # first send wins
    assert _row(session).sent_at == NOW + timedelta(seconds=1)
