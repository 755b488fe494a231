"""Pause rules in the store, on PostgreSQL and on SQLite: a pause's note, and a schedule
that pauses itself after ``pause_after_failures`` failed or lost runs in a row, through
both paths a run's end takes (``store.finish_run`` and the history writer's batches)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from dataforge_scheduler.core.enums import ExecutionStatus, TaskStatus
from dataforge_scheduler.core.journal import FinishRecord, StartRecord
from dataforge_scheduler.errors import InvalidSchedule
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
S = ExecutionStatus
_ids = itertools.count()


class Schedule:
    """One interval schedule and a way to end runs of it."""

    def __init__(self, engine: Engine, **fields: Any) -> None:
        self.factory = make_session_factory(engine)
        with self.factory.begin() as session:
            row = store.create_schedule(
                session,
                {
                    "name": f"s{next(_ids)}",
                    "task_type": "interval",
                    "task_name": "app.sync",
                    "interval_seconds": 60,
                    "overlap_policy": "allow",
                    **fields,
                },
                now=NOW - timedelta(hours=1),
                default_timezone="UTC",
            )
            self.id = row.id

    def run(
        self, status: ExecutionStatus, error: str | None = None, *, started: bool = True
    ) -> int:
        """One run through start_run and finish_run; its execution id."""
        celery_task_id = f"run-{next(_ids)}"
        with self.factory.begin() as session:
            if started:
                store.start_run(
                    session,
                    celery_task_id=celery_task_id,
                    task_name="app.sync",
                    scheduled_task_id=self.id,
                    trigger="schedule",
                    worker_hostname="w",
                    worker_pid=1,
                    kwargs={},
                    retries=0,
                    now=NOW,
                )
            else:  # a manual run the broker refused: never started
                store.create_manual_run(
                    session,
                    schedule=session.get(ScheduledTask, self.id),
                    task_name="app.sync",
                    celery_task_id=celery_task_id,
                    kwargs={},
                    now=NOW,
                )
            finished = store.finish_run(
                session,
                celery_task_id=celery_task_id,
                status=status,
                now=NOW + timedelta(seconds=1),
                error=error,
            )
            assert finished is not None
            return finished.execution_id

    def batch(self, *outcomes: tuple[ExecutionStatus, str | None]) -> None:
        """Runs written by one history-writer batch (start and end of each)."""
        records: list[Any] = []
        for status, error in outcomes:
            celery_task_id = f"batch-{next(_ids)}"
            records.append(
                StartRecord(
                    celery_task_id=celery_task_id,
                    task_name="app.sync",
                    scheduled_task_id=self.id,
                    trigger="schedule",
                    worker_hostname="w",
                    worker_pid=1,
                    kwargs={},
                    retries=0,
                    at=NOW,
                )
            )
            records.append(
                FinishRecord(
                    celery_task_id=celery_task_id,
                    status=status,
                    at=NOW + timedelta(seconds=2),
                    error=error,
                    attempt=0,
                )
            )
        with self.factory.begin() as session:
            applied = store.apply_history(session, records)
            assert applied.combined == len(outcomes)

    def row(self) -> ScheduledTask:
        with self.factory() as session:
            found = session.get(ScheduledTask, self.id)
            assert found is not None
            session.expunge(found)
            return found


def test_a_schedule_pauses_itself_after_n_failed_or_lost_runs_in_a_row(engine: Engine) -> None:
    schedule = Schedule(engine, pause_after_failures=3)
    version = schedule.row().version

    schedule.run(S.FAILED, "first")
    schedule.run(S.LOST, "worker died")
    schedule.run(S.SKIPPED)  # neither a failure nor a success: the streak stands
    schedule.run(S.REVOKED)
    assert (schedule.row().failure_streak, schedule.row().status) == (2, TaskStatus.ACTIVE)
    last = schedule.run(S.FAILED, "RuntimeError: kaput")

    paused = schedule.row()
    assert paused.status is TaskStatus.PAUSED
    assert paused.next_run_at is None
    assert paused.failure_streak == 3
    assert paused.pause_note == (
        f"paused after 3 failed or lost runs in a row; the last, execution {last}: "
        "RuntimeError: kaput"
    )
    assert paused.version == version + 1
    assert (paused.run_count, paused.failure_count) == (3, 3)
    schedule.run(S.FAILED, "a run already on its way")
    assert schedule.row().pause_note == paused.pause_note, "an ended pause is not redone"


def test_a_success_or_a_resume_starts_the_streak_again(engine: Engine) -> None:
    schedule = Schedule(engine, pause_after_failures=2)
    schedule.run(S.FAILED, "one")
    schedule.run(S.SUCCESS)
    assert schedule.row().failure_streak == 0
    schedule.run(S.FAILED, "two")
    assert schedule.row().status is TaskStatus.ACTIVE
    schedule.run(S.FAILED, "three")
    assert schedule.row().status is TaskStatus.PAUSED

    with schedule.factory.begin() as session:
        store.resume_schedule(session, schedule.id, now=NOW, default_timezone="UTC")
    resumed = schedule.row()
    assert (resumed.status, resumed.failure_streak, resumed.pause_note) == (
        TaskStatus.ACTIVE,
        0,
        None,
    )
    assert resumed.next_run_at is not None
    schedule.run(S.FAILED, "four")
    assert schedule.row().status is TaskStatus.ACTIVE, "one failure after the resume"


def test_a_run_that_never_started_or_a_schedule_without_the_rule_never_pauses(
    engine: Engine,
) -> None:
    schedule = Schedule(engine, pause_after_failures=1)
    schedule.run(S.FAILED, "not sent: the broker refused the message", started=False)
    assert (schedule.row().failure_streak, schedule.row().status) == (0, TaskStatus.ACTIVE)

    plain = Schedule(engine)
    for _ in range(5):
        plain.run(S.FAILED, "again")
    assert (plain.row().failure_streak, plain.row().status) == (5, TaskStatus.ACTIVE)


def test_a_lost_verdict_replaced_by_a_success_takes_its_failure_back(engine: Engine) -> None:
    schedule = Schedule(engine, pause_after_failures=3)
    schedule.run(S.FAILED, "one")
    celery_task_id = "late"
    with schedule.factory.begin() as session:
        store.start_run(
            session,
            celery_task_id=celery_task_id,
            task_name="app.sync",
            scheduled_task_id=schedule.id,
            trigger="schedule",
            worker_hostname="w",
            worker_pid=1,
            kwargs={},
            retries=0,
            now=NOW,
        )
        store.finish_run(session, celery_task_id=celery_task_id, status=S.LOST, now=NOW)
    assert schedule.row().failure_streak == 2
    with schedule.factory.begin() as session:
        store.finish_run(
            session, celery_task_id=celery_task_id, status=S.FAILED, now=NOW, attempt=0
        )
    assert schedule.row().failure_streak == 2, "lost became failed: still one failure"
    schedule.run(S.SUCCESS)
    assert schedule.row().failure_streak == 0


def test_the_history_writer_batches_keep_the_streak_in_run_order(engine: Engine) -> None:
    schedule = Schedule(engine, pause_after_failures=3)
    schedule.batch((S.FAILED, "a"), (S.FAILED, "b"), (S.SUCCESS, None), (S.FAILED, "c"))
    assert (schedule.row().failure_streak, schedule.row().status) == (1, TaskStatus.ACTIVE)

    schedule.batch((S.LOST, "d"), (S.FAILED, "ValueError: bad input"))

    paused = schedule.row()
    assert (paused.failure_streak, paused.status) == (3, TaskStatus.PAUSED)
    assert paused.pause_note is not None
    assert paused.pause_note.startswith("paused after 3 failed or lost runs in a row")
    assert paused.pause_note.endswith(": ValueError: bad input")


def test_a_long_error_is_cut_in_the_note(engine: Engine) -> None:
    schedule = Schedule(engine, pause_after_failures=1)
    schedule.run(S.FAILED, "x" * 5000)
    note = schedule.row().pause_note
    assert note is not None
    assert note.endswith(": " + "x" * 300)


def test_a_pause_keeps_its_note_until_resumed(engine: Engine) -> None:
    schedule = Schedule(engine)
    with schedule.factory.begin() as session:
        store.pause_schedule(session, schedule.id, now=NOW, note="upstream API down")
    first = schedule.row()
    assert (first.status, first.pause_note) == (TaskStatus.PAUSED, "upstream API down")
    with schedule.factory.begin() as session:
        store.pause_schedule(session, schedule.id, now=NOW)  # no note: nothing changes
    assert schedule.row().version == first.version
    with schedule.factory.begin() as session:
        store.pause_schedule(session, schedule.id, now=NOW, note="until Monday")
    assert (schedule.row().pause_note, schedule.row().version) == (
        "until Monday",
        first.version + 1,
    )
    with schedule.factory.begin() as session:
        store.update_schedule(
            session, schedule.id, {"status": "active"}, now=NOW, default_timezone="UTC"
        )
    assert schedule.row().pause_note is None, "made active by an update: the note goes too"
    for bad in ("", "   ", "x" * 501, 7):
        with schedule.factory.begin() as session, pytest.raises(InvalidSchedule) as refused:
            store.pause_schedule(session, schedule.id, now=NOW, note=bad)  # type: ignore[arg-type]
        assert refused.value.field == "note"


def test_pause_after_failures_is_checked_and_raw_sql_cannot_store_zero(engine: Engine) -> None:
    for bad in (0, -1, "3", True):
        with pytest.raises(InvalidSchedule) as refused:
            Schedule(engine, pause_after_failures=bad)
        assert refused.value.field == "pause_after_failures"
    schedule = Schedule(engine, pause_after_failures=2)
    with engine.begin() as connection, pytest.raises(sa.exc.IntegrityError):
        connection.execute(
            sa.text("UPDATE scheduled_tasks SET pause_after_failures = 0 WHERE id = :id"),
            {"id": schedule.id},
        )
