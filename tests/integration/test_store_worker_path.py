"""The run statements (``store.start_run`` and ``store.finish_run``, prebuilt per dialect)
on PostgreSQL and on SQLite: the same calls must leave the same rows, the same schedule
counters and give the same answers on both, and end each scenario in its expected
status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus, OverlapPolicy
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
S = ExecutionStatus
Step = tuple[str, dict[str, Any]]

# each scenario: steps on one Celery task id; ("begin", overrides) or ("finish", arguments)
EXPECTED = {
    "success with log and result": S.SUCCESS,
    "duplicate delivery, then a redelivery": S.FAILED,
    "retry then failure": S.FAILED,
    "lost verdict replaced by the real outcome": S.SUCCESS,
    "a large result is capped": S.SUCCESS,
    "a dangling schedule id is stored as NULL": S.REVOKED,
    "no schedule at all": S.SUCCESS,
}
SCENARIOS: dict[str, list[Step]] = {
    "success with log and result": [
        ("begin", {"kwargs": {"a": [1, 2], "when": NOW}}),
        ("finish", {"status": S.SUCCESS, "result": {"n": 1}, "log_output": "one\ntwo\n"}),
        ("finish", {"status": S.FAILED, "error": "late"}),
    ],
    "duplicate delivery, then a redelivery": [
        ("begin", {}),
        ("begin", {}),
        ("begin", {"redelivered": True, "worker_hostname": "w2"}),
        ("finish", {"status": S.FAILED, "error": "boom\x00", "traceback": "tb", "attempt": 0}),
    ],
    "retry then failure": [
        ("begin", {}),
        ("finish", {"status": S.RETRYING, "error": "again", "attempt": 0, "log_output": "a\n"}),
        ("begin", {"retries": 0}),
        ("begin", {"retries": 1}),
        ("finish", {"status": S.FAILED, "error": "gone", "attempt": 1}),
    ],
    "lost verdict replaced by the real outcome": [
        ("begin", {}),
        ("finish", {"status": S.LOST, "error": "lock lost"}),
        ("finish", {"status": S.SUCCESS, "result": 3, "attempt": 0, "log_output": "x\n"}),
    ],
    "a large result is capped": [
        ("begin", {}),
        ("finish", {"status": S.SUCCESS, "result": "x" * 500, "result_max_bytes": 100}),
    ],
    "a dangling schedule id is stored as NULL": [
        ("begin", {"scheduled_task_id": 999_999}),
        ("finish", {"status": S.REVOKED, "error": "revoked"}),
    ],
    "no schedule at all": [
        ("begin", {"scheduled_task_id": None}),
        ("finish", {"status": S.SUCCESS}),
    ],
}

_COMPARED = (
    "task_name",
    "trigger",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "worker_hostname",
    "worker_pid",
    "retries",
    "kwargs",
    "result",
    "error",
    "traceback",
    "log_output",
)
_COUNTERS = (
    "run_count",
    "success_count",
    "failure_count",
    "total_runtime_ms",
    "last_status",
    "last_run_at",
    "failure_streak",
)


def _new_schedule(session: Session, name: str) -> int:
    row = store.create_schedule(
        session,
        {"name": name, "task_type": "manual", "task_name": "app.sync", "overlap_policy": "allow"},
        now=NOW - timedelta(hours=1),
        default_timezone="UTC",
    )
    session.flush()
    return row.id


def _begin(session: Session, **arguments: Any) -> Any:
    started = store.start_run(session, **arguments)
    return None if started is None else (started.scheduled_task_id, started.overlap_policy)


def _finish(session: Session, **arguments: Any) -> Any:
    finished = store.finish_run(session, **arguments)
    return None if finished is None else finished.status


def _play(engine: Engine, steps: list[Step], *, tag: str) -> dict[str, Any]:
    factory = make_session_factory(engine)
    celery_task_id = tag
    with factory.begin() as session:
        schedule_id = _new_schedule(session, celery_task_id)
    answers: list[Any] = []
    for number, (kind, extra) in enumerate(steps):
        now = NOW + timedelta(seconds=number * 1.5)
        with factory.begin() as session:
            if kind == "begin":
                arguments: dict[str, Any] = {
                    "celery_task_id": celery_task_id,
                    "task_name": "app.sync",
                    "scheduled_task_id": schedule_id,
                    "trigger": "schedule",
                    "worker_hostname": "w1",
                    "worker_pid": 7,
                    "kwargs": {"n": 1},
                    "retries": 0,
                    "now": now,
                    **extra,
                }
                answer = _begin(session, **arguments)
                if answer is not None and answer[0] == schedule_id:
                    answer = ("own schedule", answer[1])
                answers.append(answer)
            else:
                answers.append(_finish(session, celery_task_id=celery_task_id, now=now, **extra))
    with factory() as session:
        row = store.get_execution_by_celery_id(session, celery_task_id)
        assert row is not None
        schedule = session.get(ScheduledTask, schedule_id)
        assert schedule is not None
        return {
            "answers": answers,
            "row": {name: getattr(row, name) for name in _COMPARED},
            "own schedule": row.scheduled_task_id == schedule_id,
            "counters": {name: getattr(schedule, name) for name in _COUNTERS},
            "last execution is the row": schedule.last_execution_id in {None, row.id},
        }


@pytest.mark.postgres
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_both_dialects_write_the_same_rows(
    pg: Engine, sqlite_engine: Engine, scenario: str
) -> None:
    steps = SCENARIOS[scenario]
    tag = "".join(word[0] for word in scenario.split())
    on_postgres = _play(pg, steps, tag=tag)
    on_sqlite = _play(sqlite_engine, steps, tag=tag)
    assert on_postgres == on_sqlite
    assert on_postgres["answers"][0] is not None  # each scenario starts a row
    assert on_postgres["row"]["status"] is EXPECTED[scenario]


def test_start_run_answers_the_schedule_and_its_policy(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with factory.begin() as session:
        schedule_id = _new_schedule(session, "policy")
        began = store.start_run(
            session,
            celery_task_id="p1",
            task_name="app.sync",
            scheduled_task_id=schedule_id,
            trigger="manual",
            worker_hostname=None,
            worker_pid=None,
            kwargs={},
            retries=0,
            now=NOW,
        )
    assert began is not None
    assert began.scheduled_task_id == schedule_id
    assert began.overlap_policy is OverlapPolicy.ALLOW
    with factory() as session:
        row = session.get(TaskExecution, began.execution_id)
        assert row is not None
        assert (row.celery_task_id, row.status) == ("p1", ExecutionStatus.RUNNING)


def test_finish_run_refuses_a_status_that_does_not_finish(engine: Engine) -> None:
    message = "status 'running' does not finish a run"
    with make_session_factory(engine).begin() as session, pytest.raises(ValueError, match=message):
        store.finish_run(session, celery_task_id="x", status=ExecutionStatus.RUNNING, now=NOW)
