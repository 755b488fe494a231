"""Execution store functions on PostgreSQL and SQLite: start (claimed row, new row,
duplicate delivery), retry, finish with the schedule's counters in the same transaction,
result capping, idempotence, reads and listing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from tests.runs import finish, start

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.errors import ExecutionNotFound, InvalidParams
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SLOT = NOW - timedelta(seconds=2)


@pytest.fixture
def factory(engine: Any) -> Any:
    return make_session_factory(engine)


@pytest.fixture
def session(factory: Any) -> Iterator[Session]:
    with factory() as session:
        yield session


@pytest.fixture
def schedule(session: Session) -> ScheduledTask:
    row = store.create_schedule(
        session,
        {"name": "sync", "task_type": "interval", "task_name": "app.sync", "interval_seconds": 60},
        now=NOW - timedelta(hours=1),
        default_timezone="UTC",
    )
    session.commit()
    return row


def _claim(session: Session, schedule: ScheduledTask, celery_id: str = "c1") -> TaskExecution:
    """What a scheduler does for a due slot: a pending row with the id it will send."""
    row = TaskExecution(
        scheduled_task_id=schedule.id,
        scheduled_for=SLOT,
        task_name=schedule.task_name,
        celery_task_id=celery_id,
        trigger=ExecutionTrigger.SCHEDULE,
        kwargs={"from": "scheduler"},
        created_at=SLOT,
    )
    session.add(row)
    session.commit()
    return row


def _start(session: Session, celery_id: str = "c1", **overrides: Any) -> TaskExecution | None:
    arguments: dict[str, Any] = {
        "celery_task_id": celery_id,
        "task_name": "app.sync",
        "scheduled_task_id": None,
        "trigger": "external",
        "worker_hostname": "worker@host",
        "worker_pid": 4242,
        "kwargs": {"from": "worker"},
        "retries": 0,
        "now": NOW,
    }
    arguments.update(overrides)
    return start(session, **arguments)


def _finish(
    session: Session, celery_id: str = "c1", status: str = "success", **extra: Any
) -> TaskExecution | None:
    extra.setdefault("now", NOW + timedelta(milliseconds=1500))
    return finish(session, celery_task_id=celery_id, status=ExecutionStatus(status), **extra)


# ---------------------------------------------------------------- start


def test_start_moves_the_claimed_row_to_running(session: Session, schedule: Any) -> None:
    claimed = _claim(session, schedule)
    started = _start(session, scheduled_task_id=schedule.id, trigger="schedule")
    session.commit()

    assert started is not None
    assert started.id == claimed.id
    assert started.status is ExecutionStatus.RUNNING
    assert started.started_at == NOW
    assert (started.worker_hostname, started.worker_pid) == ("worker@host", 4242)
    # the scheduler's side of the row is kept
    assert started.scheduled_for == SLOT
    assert started.trigger is ExecutionTrigger.SCHEDULE
    assert started.kwargs == {"from": "scheduler"}
    assert started.created_at == SLOT
    assert session.scalar(sa.select(sa.func.count()).select_from(TaskExecution)) == 1


def test_start_inserts_a_running_row_when_none_was_claimed(session: Session) -> None:
    started = _start(session, kwargs={"when": NOW, "ids": (1, 2)})
    session.commit()

    assert started is not None
    assert started.status is ExecutionStatus.RUNNING
    assert started.trigger is ExecutionTrigger.EXTERNAL
    assert started.scheduled_task_id is None
    assert started.scheduled_for is None
    assert started.created_at == NOW
    assert started.kwargs == {"when": NOW.isoformat(), "ids": [1, 2]}


def test_a_duplicate_delivery_gets_none(session: Session, schedule: Any) -> None:
    _claim(session, schedule)
    assert _start(session) is not None
    assert _start(session, worker_hostname="other@host") is None
    _finish(session)
    assert _start(session) is None
    session.commit()
    row = store.get_execution_by_celery_id(session, "c1")
    assert row is not None
    assert row.worker_hostname == "worker@host"
    assert row.status is ExecutionStatus.SUCCESS


def test_a_retry_starts_the_same_row_again(session: Session, schedule: Any) -> None:
    _claim(session, schedule)
    _start(session)
    retrying = _finish(session, status="retrying", error="timeout", traceback="Traceback ...")
    assert retrying is not None
    assert retrying.status is ExecutionStatus.RETRYING
    assert (retrying.retries, retrying.error) == (1, "timeout")
    assert _finish(session, status="retrying") is None  # a second retrying is a no-op

    again = _start(session, retries=1, now=NOW + timedelta(minutes=1))
    assert again is not None
    assert again.id == retrying.id
    assert again.status is ExecutionStatus.RUNNING
    assert again.started_at == NOW + timedelta(minutes=1)
    session.commit()
    session.refresh(schedule)
    assert schedule.run_count == 0  # retrying never touches the counters


# ---------------------------------------------------------------- finish


def test_finish_records_the_outcome_and_the_counters_together(
    factory: Any, session: Session, schedule: ScheduledTask
) -> None:
    _claim(session, schedule)
    _start(session)
    finished = _finish(
        session, result={"synced": 10}, log_output="开始同步账号...\ndone", error=None
    )
    session.commit()

    assert finished is not None
    assert finished.status is ExecutionStatus.SUCCESS
    assert finished.finished_at == NOW + timedelta(milliseconds=1500)
    assert finished.duration_ms == 1500
    assert finished.result == {"synced": 10}
    assert finished.log_output == "开始同步账号...\ndone"

    with factory() as fresh:
        counted = fresh.get(ScheduledTask, schedule.id)
        assert counted is not None
        assert (counted.run_count, counted.success_count, counted.failure_count) == (1, 1, 0)
        assert counted.total_runtime_ms == 1500
        assert counted.last_status is ExecutionStatus.SUCCESS
        assert counted.last_execution_id == finished.id
        assert counted.last_run_at == NOW
        assert counted.version == 1  # results are not configuration


def test_failures_add_up_with_arithmetic(session: Session, schedule: ScheduledTask) -> None:
    for number, status in enumerate(["success", "failed", "lost", "failed"]):
        celery_id = f"c{number}"
        _start(session, celery_id, scheduled_task_id=schedule.id, now=NOW)
        _finish(session, celery_id, status, now=NOW + timedelta(seconds=number + 1))
    session.commit()
    session.refresh(schedule)

    assert (schedule.run_count, schedule.success_count, schedule.failure_count) == (4, 1, 3)
    assert schedule.total_runtime_ms == 1000 + 2000 + 3000 + 4000
    assert schedule.last_status is ExecutionStatus.FAILED


def test_skipped_and_revoked_runs_are_not_counted_as_runs(
    session: Session, schedule: ScheduledTask
) -> None:
    _claim(session, schedule, "pending-then-revoked")
    revoked = _finish(session, "pending-then-revoked", "revoked")
    _start(session, "skipped", scheduled_task_id=schedule.id)
    _finish(session, "skipped", "skipped", error="lock held")
    session.commit()
    session.refresh(schedule)

    assert revoked is not None
    assert revoked.duration_ms is None  # it never started
    assert schedule.run_count == 0
    assert schedule.last_status is ExecutionStatus.SKIPPED


def test_finish_and_counters_share_one_transaction(
    factory: Any, session: Session, schedule: ScheduledTask
) -> None:
    _claim(session, schedule)
    _start(session)
    session.commit()
    assert _finish(session) is not None
    session.rollback()

    with factory() as fresh:
        row = store.get_execution_by_celery_id(fresh, "c1")
        assert row is not None
        assert row.status is ExecutionStatus.RUNNING
        assert fresh.get(ScheduledTask, schedule.id).run_count == 0


def test_finishing_twice_is_a_no_op(session: Session, schedule: ScheduledTask) -> None:
    _claim(session, schedule)
    _start(session)
    first = _finish(session, result=1)
    second = _finish(session, status="failed", result=2, now=NOW + timedelta(hours=1))
    session.commit()
    session.refresh(schedule)

    assert first is not None
    assert second is None
    assert first.status is ExecutionStatus.SUCCESS
    assert first.result == 1
    assert schedule.run_count == 1
    assert _finish(session, "never-started") is None


def test_a_status_that_does_not_finish_is_refused(session: Session) -> None:
    _start(session)
    with pytest.raises(ValueError, match="does not finish"):
        _finish(session, status="running")


def test_results_are_made_json_safe(session: Session) -> None:
    _start(session)

    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    result = {"object": Opaque(), "set": {3}, "nan": float("nan"), 7: "int key", "nul": "a\x00b"}
    finished = _finish(session, result=result, traceback="line\x00two")
    session.commit()
    session.expire_all()
    stored = store.get_execution_by_celery_id(session, "c1")

    assert finished is not None
    assert stored is not None
    assert stored.result == {
        "object": "<Opaque>",
        "set": [3],
        "nan": "nan",
        "7": "int key",
        "nul": "a\ufffdb",
    }
    assert stored.traceback == "line\ufffdtwo"


def test_a_large_result_is_replaced_by_a_preview(session: Session) -> None:
    _start(session)
    big = {"rows": ["值" * 100] * 100}
    finished = _finish(session, result=big, result_max_bytes=1000)
    session.commit()

    assert finished is not None
    assert finished.result["truncated"] is True
    preview = finished.result["preview"]
    assert 990 <= len(preview.encode("utf-8")) <= 1000
    assert json.dumps(big, ensure_ascii=False).startswith(preview)


def test_a_result_at_the_limit_is_kept_whole(session: Session) -> None:
    _start(session)
    result = "x" * 98  # 100 bytes of JSON with its quotes
    finished = _finish(session, result=result, result_max_bytes=100)
    assert finished is not None
    assert finished.result == result


# ---------------------------------------------------------------- read


def test_get_execution(session: Session) -> None:
    started = _start(session)
    session.commit()
    assert started is not None
    assert store.get_execution(session, started.id) is started
    assert store.get_execution_by_celery_id(session, "missing") is None
    with pytest.raises(ExecutionNotFound, match="no execution with id 999"):
        store.get_execution(session, 999)


def test_list_executions_newest_first_with_filters(
    session: Session, schedule: ScheduledTask
) -> None:
    for minute in range(5):
        _start(
            session,
            f"run-{minute}",
            scheduled_task_id=schedule.id if minute % 2 == 0 else None,
            now=NOW + timedelta(minutes=minute),
        )
    _finish(session, "run-4", now=NOW + timedelta(minutes=10))
    session.commit()

    everything = store.list_executions(session, count=True)
    assert [row.celery_task_id for row in everything.items] == [
        f"run-{m}" for m in range(4, -1, -1)
    ]
    assert everything.total == 5
    mine = store.list_executions(session, scheduled_task_id=schedule.id)
    assert [row.celery_task_id for row in mine.items] == ["run-4", "run-2", "run-0"]
    done = store.list_executions(session, status="success")
    assert [row.celery_task_id for row in done.items] == ["run-4"]
    second_page = store.list_executions(session, page=2, page_size=2, count=True)
    assert [row.celery_task_id for row in second_page.items] == ["run-2", "run-1"]
    assert second_page.total == 5
    after = store.list_executions(session, cursor=second_page.next_cursor, page_size=2)
    assert [row.celery_task_id for row in after.items] == ["run-0"]
    assert (after.page, after.next_cursor) == (None, None)
    window = store.list_executions(
        session, since=NOW + timedelta(minutes=1), until=NOW + timedelta(minutes=3)
    )
    assert [row.celery_task_id for row in window.items] == ["run-2", "run-1"]
    named = store.list_executions(session, task_name="app.sync", trigger="external")
    assert len(named.items) == 5
    assert store.list_executions(session, trigger="manual").items == []
    with pytest.raises(InvalidParams) as caught:
        store.list_executions(session, status="exploded")
    assert caught.value.field == "status"
