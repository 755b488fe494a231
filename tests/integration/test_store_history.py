"""``store.apply_history`` (the history writer's write) on PostgreSQL and on SQLite.

Its promise: applying a batch of outbox records leaves exactly the rows and schedule
counters that applying the same records one at a time, in order, leaves (the combined
multi-row write only saves statements), and applying a batch again changes nothing.
Each run below is one case the writer meets: the usual start + end pair, a row the
scheduler created ``pending``, a ``lost`` verdict that came first, a run still going, an
end whose start was written earlier, a retry, a duplicate delivery, a deleted schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.journal import FinishRecord, Record, StartRecord
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
S = ExecutionStatus
SCHEDULED = "scheduled"  # placeholder for the replay's own schedule id

_COMPARED = (
    "task_name",
    "scheduled_task_id",
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
)


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def _start(run: str, seconds: float, **extra: Any) -> StartRecord:
    values: dict[str, Any] = {
        "celery_task_id": run,
        "task_name": "app.sync",
        "scheduled_task_id": SCHEDULED,
        "trigger": "schedule",
        "worker_hostname": "w1",
        "worker_pid": 7,
        "kwargs": {"n": 1, "when": "2030-01-01"},
        "retries": 0,
        "at": _at(seconds),
        **extra,
    }
    return StartRecord(**values)


def _end(run: str, seconds: float, status: ExecutionStatus, **extra: Any) -> FinishRecord:
    values: dict[str, Any] = {"attempt": 0, **extra}
    return FinishRecord(celery_task_id=run, status=status, at=_at(seconds), **values)


# (what the database holds before the batch, the batch) for each run, by run name
Before = Callable[[Session, str, int], None]


def _pending(session: Session, run: str, schedule_id: int) -> None:
    schedule = session.get(ScheduledTask, schedule_id)
    store.create_manual_run(
        session, schedule=schedule, task_name="app.sync", celery_task_id=run, kwargs={}, now=NOW
    )


def _started(session: Session, run: str, schedule_id: int) -> None:
    store.apply_history(session, [_bind(_start(run, 0), schedule_id)])


def _judged_lost(session: Session, run: str, schedule_id: int) -> None:
    _started(session, run, schedule_id)
    store.finish_run(session, celery_task_id=run, status=S.LOST, now=_at(30), error="lock gone")


def _pending_judged_lost(session: Session, run: str, schedule_id: int) -> None:
    _pending(session, run, schedule_id)
    store.finish_run(session, celery_task_id=run, status=S.LOST, now=_at(30), error="no start")


def _finished(session: Session, run: str, schedule_id: int) -> None:
    _started(session, run, schedule_id)
    store.finish_run(session, celery_task_id=run, status=S.SUCCESS, now=_at(1), attempt=0)


CASES: dict[str, tuple[Before | None, list[Record], ExecutionStatus]] = {
    "pair": (
        None,
        [
            _start("pair", 0),
            _end("pair", 0.25, S.SUCCESS, result={"rows": 3}, log="one\ntwo"),
        ],
        S.SUCCESS,
    ),
    "pair-failed": (
        None,
        [_start("pair-failed", 1), _end("pair-failed", 3, S.FAILED, error="boom", traceback="tb")],
        S.FAILED,
    ),
    "pending": (
        _pending,
        [_start("pending", 2, trigger="manual"), _end("pending", 2.5, S.SUCCESS, log="x")],
        S.SUCCESS,
    ),
    "lost-then-outcome": (_judged_lost, [_end("lost-then-outcome", 40, S.SUCCESS)], S.SUCCESS),
    "lost-before-start": (
        _pending_judged_lost,
        [_start("lost-before-start", 35), _end("lost-before-start", 36, S.SUCCESS)],
        S.SUCCESS,
    ),
    "still-running": (None, [_start("still-running", 4)], S.RUNNING),
    "end-of-earlier-start": (
        _started,
        [_end("end-of-earlier-start", 5, S.FAILED, error="late")],
        S.FAILED,
    ),
    "retry": (
        None,
        [
            _start("retry", 6),
            _end("retry", 6.5, S.RETRYING, error="again", log="a"),
            _start("retry", 8, retries=1),
            _end("retry", 9, S.SUCCESS, attempt=1, log="a\nb"),
        ],
        S.SUCCESS,
    ),
    "duplicate": (_finished, [_start("duplicate", 10)], S.SUCCESS),
    "deleted-schedule": (
        None,
        [
            _start("deleted-schedule", 11, scheduled_task_id=999_999),
            _end("deleted-schedule", 12, S.REVOKED, error="revoked"),
        ],
        S.REVOKED,
    ),
}


def _bind(record: Record, schedule_id: int, prefix: str = "") -> Record:
    """``record`` with the replay's prefix on its run and its own schedule id."""
    fields = dict(vars(record))
    fields["celery_task_id"] = prefix + record.celery_task_id
    if fields.get("scheduled_task_id") == SCHEDULED:
        fields["scheduled_task_id"] = schedule_id
    return type(record)(**fields)


def _prepare(engine: Engine, prefix: str) -> tuple[int, list[Record]]:
    """A schedule, the state before the batch, and the batch (runs interleaved)."""
    factory = make_session_factory(engine)
    with factory.begin() as session:
        schedule_id = store.create_schedule(
            session,
            {"name": f"{prefix}sync", "task_type": "manual", "task_name": "app.sync"},
            now=NOW - timedelta(hours=1),
            default_timezone="UTC",
        ).id
        for run, (before, _, _) in CASES.items():
            if before is not None:
                before(session, prefix + run, schedule_id)
    batch = [
        _bind(record, schedule_id, prefix) for _, records, _ in CASES.values() for record in records
    ]
    # interleave as concurrent runs append: sort by instant, stable for one run's order
    batch.sort(key=lambda record: record.at)
    return schedule_id, batch


def _state(engine: Engine, prefix: str, schedule_id: int) -> dict[str, Any]:
    factory = make_session_factory(engine)
    with factory() as session:
        rows = session.scalars(
            select(TaskExecution).where(TaskExecution.celery_task_id.startswith(prefix))
        ).all()
        schedule = session.get(ScheduledTask, schedule_id)
        assert schedule is not None
        by_run = {}
        for row in rows:
            values = {name: getattr(row, name) for name in _COMPARED}
            if values["scheduled_task_id"] == schedule_id:
                values["scheduled_task_id"] = SCHEDULED
            by_run[row.celery_task_id.removeprefix(prefix)] = values
        last = session.get(TaskExecution, schedule.last_execution_id)
        counters = {name: getattr(schedule, name) for name in _COUNTERS}
        counters["last_execution"] = None if last is None else last.celery_task_id[len(prefix) :]
        return {"runs": by_run, "counters": counters}


def test_a_batch_writes_what_its_records_one_by_one_write(engine: Engine) -> None:
    factory = make_session_factory(engine)
    batch_schedule, batch = _prepare(engine, "b-")
    with factory.begin() as session:
        applied = store.apply_history(session, batch)
    single_schedule, singles = _prepare(engine, "s-")
    for record in singles:
        with factory.begin() as session:
            store.apply_history(session, [record])

    in_batch = _state(engine, "b-", batch_schedule)
    one_by_one = _state(engine, "s-", single_schedule)
    assert in_batch == one_by_one
    assert {run: values["status"] for run, values in in_batch["runs"].items()} == {
        run: status for run, (_, _, status) in CASES.items()
    }
    # the plain pairs (new, pending) went into the one multi-row statement
    assert applied.combined == 4
    # a start the row is past: a duplicate, or a start that came after a lost verdict
    # (whose end then replaces the verdict)
    assert sorted(applied.refused_starts) == ["b-duplicate", "b-lost-before-start"]
    pair = in_batch["runs"]["pair"]
    assert (pair["duration_ms"], pair["result"], pair["log_output"]) == (
        250,
        {"rows": 3},
        "one\ntwo",
    )
    assert in_batch["runs"]["deleted-schedule"]["scheduled_task_id"] is None
    counters = in_batch["counters"]
    assert (counters["run_count"], counters["success_count"]) == (7, 5)


def test_applying_a_batch_again_changes_nothing(engine: Engine) -> None:
    factory = make_session_factory(engine)
    schedule_id, batch = _prepare(engine, "again-")
    with factory.begin() as session:
        store.apply_history(session, batch)
    once = _state(engine, "again-", schedule_id)
    with factory.begin() as session:
        applied = store.apply_history(session, batch)
    assert _state(engine, "again-", schedule_id) == once
    assert applied.combined == 0
