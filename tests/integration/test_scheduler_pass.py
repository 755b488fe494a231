"""One claim-and-send pass of DatabaseScheduler, driven by a ManualClock.

Every test runs on PostgreSQL and SQLite (the ``engine`` fixture). Nothing sleeps: the
clock moves, ``run_pass()`` runs, and the test reads what was sent and stored
(``tests/scheduler_harness.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from tests.scheduler_harness import RECORD, SEED_INSERT, T0, Harness, seconds

from dataforge_scheduler.celery.beat import DatabaseScheduler
from dataforge_scheduler.core.enums import ExecutionStatus, TaskStatus
from dataforge_scheduler.errors import BackendUnavailable, ConflictError, InvalidSchedule
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.testing import RecordingDispatcher


@pytest.fixture
def h(engine: Any) -> Iterator[Harness]:
    harness = Harness(engine)
    yield harness
    harness.scheduler.close()  # a tick() may have opened the database listener


def test_an_interval_slot_is_sent_once_with_kwargs_headers_and_options(h: Harness) -> None:
    sid = h.create(
        task_type="interval",
        interval_seconds=10,
        handler_kwargs={"account": "a1"},
        queue="reports",
        priority=5,
        expire_seconds=30,
    )
    assert h.at(T0 + seconds(9)).sent == ()
    result = h.at(T0 + seconds(10.5))

    [execution] = h.executions(sid)
    [sent] = h.dispatcher.sent
    assert [slot.execution_id for slot in result.sent] == [execution.id]
    assert sent.task_name == RECORD
    assert sent.task_id == execution.celery_task_id
    assert sent.kwargs == {"account": "a1", "scheduled_task_id": sid}
    assert sent.options == {"queue": "reports", "priority": 5, "expires": T0 + seconds(40)}
    assert sent.headers == {
        "df_trigger": "schedule",
        "df_slot": (T0 + seconds(10)).isoformat(),
        "df_execution_id": execution.id,
        "df_overlap": "skip",
    }
    assert execution.status is ExecutionStatus.PENDING
    assert execution.scheduled_for == T0 + seconds(10)
    assert execution.kwargs == sent.kwargs
    assert execution.sent_at == T0 + seconds(10.5)
    assert h.schedule(sid).next_run_at == T0 + seconds(20)
    assert result.next_run_at == T0 + seconds(20)

    assert h.at(T0 + seconds(11)).sent == ()  # the same slot never goes out twice
    assert len(h.dispatcher.sent) == 1


def test_a_one_second_interval_fires_every_slot_on_its_grid(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=1)
    for step in range(1, 11):
        h.at(T0 + seconds(step + 0.3))
    slots = [e.scheduled_for for e in h.executions(sid)]
    assert slots == [T0 + seconds(k) for k in range(1, 11)]
    assert len({s.task_id for s in h.dispatcher.sent}) == 10


def _by_status(h: Harness, sid: int) -> dict[ExecutionStatus, list[Any]]:
    rows: dict[ExecutionStatus, list[Any]] = {}
    for row in h.executions(sid):
        rows.setdefault(row.status, []).append(row.scheduled_for)
    return rows


def test_a_backlog_within_the_grace_runs_its_newest_slot_and_records_the_rest_missed(
    h: Harness,
) -> None:
    """Five one-second slots due in one pass (a beat busy or away for 5 s): sent together
    they would race for the schedule's lock, and four would end ``skipped``. Under
    ``run_once`` the newest runs and the four others say why they did not."""
    sid = h.create(task_type="interval", interval_seconds=1)
    result = h.at(T0 + seconds(5.5))
    assert [slot.scheduled_for for slot in result.sent] == [T0 + seconds(5)]
    rows = _by_status(h, sid)
    assert rows == {
        ExecutionStatus.PENDING: [T0 + seconds(5)],
        ExecutionStatus.MISSED: [T0 + seconds(k) for k in range(1, 5)],
    }
    missed = [e for e in h.executions(sid) if e.status is ExecutionStatus.MISSED]
    assert all("misfire policy run_once runs only the newest" in (e.error or "") for e in missed)
    assert all(e.finished_at is not None and e.sent_at is None for e in missed)
    assert h.schedule(sid).next_run_at == T0 + seconds(6)
    assert h.schedule(sid).run_count == 0  # a missed slot is no run


def test_a_backlog_with_overlap_allow_sends_every_slot_at_once(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=1, overlap_policy="allow")
    result = h.at(T0 + seconds(5.5))
    assert [slot.scheduled_for for slot in result.sent] == [T0 + seconds(k) for k in range(1, 6)]
    assert set(_by_status(h, sid)) == {ExecutionStatus.PENDING}


def test_a_backlog_of_a_plain_celery_task_goes_at_once_it_takes_no_lock(h: Harness) -> None:
    # not a DataForgeTask: no lock to race for, and no history to wait on
    def plain(**kwargs: Any) -> None:
        return None

    h.app.task(name="plain.record", shared=False)(plain)
    sid = h.create(task_type="interval", interval_seconds=1, task_name="plain.record")
    result = h.at(T0 + seconds(5.5))
    assert [slot.scheduled_for for slot in result.sent] == [T0 + seconds(k) for k in range(1, 6)]
    assert set(_by_status(h, sid)) == {ExecutionStatus.PENDING}


def test_several_stranded_slots_a_newer_slot_overtook_are_all_recorded_missed(
    h: Harness,
) -> None:
    """Two beats died after claiming (slots 1 s and 2 s of two schedules each); slot
    3 s went out meanwhile: one sweep records the four stranded slots ``missed``."""
    first = h.create(task_type="interval", interval_seconds=1)
    second = h.create(task_type="interval", interval_seconds=1)
    for at in (1, 2):
        crashing = DatabaseScheduler(h.app, runtime=h.runtime, dispatcher=_CrashOnSend())
        crashing.unstarted_wait_seconds = 0
        h.clock.set(T0 + seconds(at))
        with pytest.raises(KeyboardInterrupt):
            crashing.run_pass()
    h.at(T0 + seconds(3))
    h.at(T0 + seconds(3 + h.scheduler.resend_after_seconds))
    for sid in (first, second):
        rows = _by_status(h, sid)
        assert rows[ExecutionStatus.MISSED] == [T0 + seconds(1), T0 + seconds(2)]


def test_a_slot_never_races_an_earlier_run_the_broker_has_not_delivered(h: Harness) -> None:
    """Slot 1 s was sent and has not started (a worker reconnecting after a broker
    restart would get both at once): slot 2 s waits ``queued`` and is sent once slot 1 s
    ended. An earlier run that has not started after ``unstarted_wait_seconds`` holds
    nothing back (its message may be lost)."""
    h.scheduler.unstarted_wait_seconds = 30
    sid = h.create(task_type="interval", interval_seconds=1)
    assert [s.scheduled_for for s in h.at(T0 + seconds(1)).sent] == [T0 + seconds(1)]
    assert h.at(T0 + seconds(2)).sent == ()
    assert _by_status(h, sid)[ExecutionStatus.QUEUED] == [T0 + seconds(2)]
    with h.runtime.session() as session:
        [first] = [e for e in h.executions(sid) if e.scheduled_for == T0 + seconds(1)]
        store.finish_run(
            session,
            celery_task_id=first.celery_task_id,
            status=ExecutionStatus.SUCCESS,
            now=h.clock.now(),
        )
        session.commit()
    assert [s.scheduled_for for s in h.at(T0 + seconds(2.5)).sent] == [T0 + seconds(2)]
    # slot 2 s never starts; 30 s on, the slot then due goes out anyway
    h.clock.set(T0 + seconds(40))
    with h.runtime.session() as session:
        store.pause_schedule(session, sid, now=h.clock.now())
        store.resume_schedule(session, sid, now=h.clock.now(), default_timezone="UTC")
    assert [s.scheduled_for for s in h.at(T0 + seconds(41)).sent] == [T0 + seconds(41)]


def test_a_catch_up_backlog_runs_one_slot_after_another_in_order(h: Harness) -> None:
    """Three slots due in one pass under ``catch_up``: the oldest is sent, the others
    wait unsent and go one at a time, each once the run before it has ended, with the
    slots falling due meanwhile queued behind them: the schedule never has two runs in
    flight, and runs in slot order."""
    h.scheduler.unstarted_wait_seconds = 30  # a sent run is in flight until it ends
    sid = h.create(task_type="interval", interval_seconds=1, misfire_policy="catch_up")
    first = h.at(T0 + seconds(3.5))
    assert [slot.scheduled_for for slot in first.sent] == [T0 + seconds(1)]
    assert first.next_sweep_at is not None
    order = [T0 + seconds(1)]

    def finish(slot: Any) -> None:
        with h.runtime.session() as session:
            [run] = [e for e in h.executions(sid) if e.scheduled_for == slot]
            store.finish_run(
                session,
                celery_task_id=run.celery_task_id,
                status=ExecutionStatus.SUCCESS,
                now=h.clock.now(),
            )
            session.commit()

    # while slot 1 is in flight nothing else goes, however often the beat looks
    assert h.at(T0 + seconds(5.1)).sent == ()
    for step in range(6):
        finish(order[-1])
        sent = [slot.scheduled_for for slot in h.at(T0 + seconds(5.2 + 0.5 * step)).sent]
        assert len(sent) == 1
        order.append(sent[0])
        assert h.at(T0 + seconds(5.4 + 0.5 * step)).sent == ()  # the run is in flight
    assert order == [T0 + seconds(k) for k in range(1, 8)]
    assert ExecutionStatus.MISSED not in _by_status(h, sid)


def _start(h: Harness, sid: int, slot: Any) -> str:
    """The slot's run started on a worker (its row ``running``); its Celery task id."""
    [run] = [e for e in h.executions(sid) if e.scheduled_for == slot]
    with h.runtime.session() as session:
        started = store.start_run(
            session,
            celery_task_id=run.celery_task_id,
            task_name=run.task_name,
            scheduled_task_id=sid,
            trigger="schedule",
            worker_hostname="worker@test",
            worker_pid=4242,
            kwargs=dict(run.kwargs or {}),
            retries=0,
            now=h.clock.now(),
        )
        session.commit()
    assert started is not None
    return run.celery_task_id


def _end(h: Harness, celery_task_id: str, status: ExecutionStatus) -> None:
    with h.runtime.session() as session:
        store.finish_run(session, celery_task_id=celery_task_id, status=status, now=h.clock.now())
        session.commit()


def test_buffer_one_runs_one_waiting_slot_after_the_run_going_and_skips_a_further_one(
    h: Harness,
) -> None:
    """Slot 1 s runs long. Slot 2 s finds it going and waits ``queued``; slot 3 s finds
    the buffer full and is recorded ``skipped`` with the reason; once slot 1 s ends, slot
    2 s is sent (the sweep), and slot 4 s, due while slot 2 s is in flight, waits."""
    h.scheduler.unstarted_wait_seconds = 30
    sid = h.create(task_type="interval", interval_seconds=1, overlap_policy="buffer_one")
    assert [s.scheduled_for for s in h.at(T0 + seconds(1)).sent] == [T0 + seconds(1)]
    going = _start(h, sid, T0 + seconds(1))
    assert h.at(T0 + seconds(2)).sent == ()
    assert h.at(T0 + seconds(3)).sent == ()
    rows = {e.scheduled_for: e for e in h.executions(sid)}
    assert rows[T0 + seconds(2)].status is ExecutionStatus.QUEUED
    skipped = rows[T0 + seconds(3)]
    assert skipped.status is ExecutionStatus.SKIPPED
    assert skipped.error is not None
    assert "buffer_one" in skipped.error
    assert skipped.finished_at is not None
    assert skipped.sent_at is None
    assert h.at(T0 + seconds(3.2)).sent == ()  # still going: the waiting slot waits
    _end(h, going, ExecutionStatus.SUCCESS)
    assert [s.scheduled_for for s in h.at(T0 + seconds(3.5)).sent] == [T0 + seconds(2)]
    assert h.at(T0 + seconds(4)).sent == ()
    assert _by_status(h, sid)[ExecutionStatus.QUEUED] == [T0 + seconds(4)]
    assert h.dispatcher.cancelled == []


def test_cancel_other_cancels_the_run_going_with_the_reason_then_sends_its_slot(
    h: Harness,
) -> None:
    """Slot 1 s runs long; slot 2 s cancels it (through the dispatcher, the reason noted
    for the worker that records it ``revoked``) and waits until its row has ended."""
    sid = h.create(task_type="interval", interval_seconds=1, overlap_policy="cancel_other")
    assert [s.scheduled_for for s in h.at(T0 + seconds(1)).sent] == [T0 + seconds(1)]
    going = _start(h, sid, T0 + seconds(1))
    assert h.at(T0 + seconds(2)).sent == ()
    assert h.dispatcher.cancelled == [going]
    reason = h.runtime.backend.cancels.reason(going)
    assert reason is not None
    assert "cancel_other" in reason
    assert (T0 + seconds(2)).isoformat() in reason
    assert _by_status(h, sid)[ExecutionStatus.QUEUED] == [T0 + seconds(2)]
    assert h.at(T0 + seconds(2.5)).sent == ()  # not ended yet: the slot waits
    _end(h, going, ExecutionStatus.REVOKED)
    assert [s.scheduled_for for s in h.at(T0 + seconds(2.7)).sent] == [T0 + seconds(2)]
    assert h.dispatcher.cancelled == [going]  # cancelled once


def test_buffer_one_keeps_one_slot_waiting_through_a_broker_outage(h: Harness) -> None:
    """The broker refuses every send for a while: the slots claimed meanwhile are not all
    replayed once it is back. One stranded slot runs, one waits behind it, the rest are
    recorded ``skipped``."""
    sid = h.create(task_type="interval", interval_seconds=1, overlap_policy="buffer_one")
    h.dispatcher.down = True
    for k in range(1, 6):
        assert h.at(T0 + seconds(k)).sent == ()
    rows = _by_status(h, sid)
    assert rows[ExecutionStatus.PENDING] == [T0 + seconds(1)]  # claimed, never sent
    assert rows[ExecutionStatus.QUEUED] == [T0 + seconds(2)]
    assert rows[ExecutionStatus.SKIPPED] == [T0 + seconds(k) for k in range(3, 6)]
    h.dispatcher.down = False
    sent = [s.scheduled_for for s in h.at(T0 + seconds(5.5)).sent]
    assert sent == [T0 + seconds(1)]  # the oldest first; the other waits for it


def test_cancel_other_survives_a_broker_that_refuses_the_revoke(h: Harness) -> None:
    """The revoke cannot reach the broker: the pass goes on, the new slot waits, and the
    next slot cancels the run again once the broker is back."""
    sid = h.create(task_type="interval", interval_seconds=1, overlap_policy="cancel_other")
    h.at(T0 + seconds(1))
    going = _start(h, sid, T0 + seconds(1))
    h.dispatcher.down = True
    assert h.at(T0 + seconds(2)).sent == ()
    assert h.dispatcher.cancelled == []
    assert _by_status(h, sid)[ExecutionStatus.QUEUED] == [T0 + seconds(2)]
    h.dispatcher.down = False
    assert h.at(T0 + seconds(3)).sent == ()
    assert h.dispatcher.cancelled == [going]


def test_cancel_other_revokes_a_retry_waiting_out_its_countdown_at_once(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=1, overlap_policy="cancel_other")
    h.at(T0 + seconds(1))
    going = _start(h, sid, T0 + seconds(1))
    _end(h, going, ExecutionStatus.RETRYING)
    assert h.at(T0 + seconds(2)).sent == ()
    [retried] = [e for e in h.executions(sid) if e.celery_task_id == going]
    assert retried.status is ExecutionStatus.REVOKED
    assert retried.error is not None
    assert "cancel_other" in retried.error
    # nothing is in flight any more: the sweep sends the new slot
    assert [s.scheduled_for for s in h.at(T0 + seconds(2.5)).sent] == [T0 + seconds(2)]


class _SendsAnyTask(DatabaseScheduler):
    """A beat that sends names it does not import (``dataforge.sync_accounts`` here)."""

    def is_registered(self, task_name: str) -> bool:
        return True


def test_the_seed_insert_gets_its_first_run_from_the_trigger_and_fires(engine: Any) -> None:
    h = Harness(engine, scheduler_cls=_SendsAnyTask)
    h.sql(SEED_INSERT)
    with h.runtime.session() as session:
        row = session.scalars(sa.select(ScheduledTask)).one()
    created = row.created_at
    assert row.next_run_at is None

    assert h.at(created + seconds(5)).sent == ()
    assert h.schedule(row.id).next_run_at == created + timedelta(hours=1)
    result = h.at(created + timedelta(hours=1, seconds=1))
    [sent] = h.dispatcher.sent
    assert [slot.scheduled_for for slot in result.sent] == [created + timedelta(hours=1)]
    assert sent.task_name == "dataforge.sync_accounts"
    assert sent.kwargs == {"scheduled_task_id": row.id}
    assert h.schedule(row.id).next_run_at == created + timedelta(hours=2)


def test_a_cron_schedule_fires_on_the_minute(h: Harness) -> None:
    sid = h.create(task_type="cron", cron_expression="* * * * *")
    h.at(T0 + seconds(30))
    h.at(T0 + seconds(60.2))
    h.at(T0 + seconds(90))
    h.at(T0 + seconds(120.1))
    assert [e.scheduled_for for e in h.executions(sid)] == [T0 + seconds(60), T0 + seconds(120)]


def test_a_date_schedule_fires_once_then_completes(h: Harness) -> None:
    sid = h.create(task_type="date", run_at=T0 + seconds(30))
    h.at(T0 + seconds(31))
    h.at(T0 + seconds(90))
    assert [e.scheduled_for for e in h.executions(sid)] == [T0 + seconds(30)]
    row = h.schedule(sid)
    assert row.status is TaskStatus.COMPLETED
    assert row.next_run_at is None


def test_start_at_and_end_at_bound_the_slots(h: Harness) -> None:
    sid = h.create(
        task_type="interval",
        interval_seconds=60,
        start_at=T0 + seconds(300),
        end_at=T0 + seconds(480),
    )
    for minute in range(1, 12):
        h.at(T0 + seconds(60 * minute + 1))
    slots = [e.scheduled_for for e in h.executions(sid)]
    # the grid is anchored at start_at: first fire one interval later, last at end_at
    assert slots == [T0 + seconds(60 * k) for k in (6, 7, 8)]
    assert h.schedule(sid).status is TaskStatus.COMPLETED


def test_an_unregistered_task_is_recorded_failed_logged_once_and_never_sent(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    sid = h.create(task_type="interval", interval_seconds=10, task_name="t.missing")
    with caplog.at_level(logging.ERROR, logger="dataforge_scheduler"):
        h.at(T0 + seconds(10))
        h.at(T0 + seconds(20))
    assert h.dispatcher.sent == []
    runs = h.executions(sid)
    assert [(e.status, e.scheduled_for) for e in runs] == [
        (ExecutionStatus.FAILED, T0 + seconds(10)),
        (ExecutionStatus.FAILED, T0 + seconds(20)),
    ]
    assert "not registered" in (runs[0].error or "")
    row = h.schedule(sid)
    assert row.last_status is ExecutionStatus.FAILED
    assert row.last_execution_id == runs[-1].id
    assert row.next_run_at == T0 + seconds(30)
    errors = [r for r in caplog.records if "t.missing" in r.getMessage()]
    assert len(errors) == 1
    assert "not registered" in errors[0].getMessage()


def test_kwargs_that_fail_the_registered_params_are_recorded_failed_not_sent(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.runtime.registry.register(
        RECORD, name="Record", params=[{"name": "days", "type": "int", "required": True}]
    )
    good = h.create(task_type="interval", interval_seconds=10, handler_kwargs={"days": "3"})
    bad = h.create(task_type="interval", interval_seconds=10, handler_kwargs={"days": 1})
    # raw SQL, as the API would refuse it: an unknown key and no "days"
    h.sql(
        "UPDATE scheduled_tasks SET handler_kwargs = :kwargs WHERE id = :id",
        kwargs='{"bogus": 1}',
        id=bad,
    )
    with caplog.at_level(logging.ERROR, logger="dataforge_scheduler"):
        h.at(T0 + seconds(10))
        h.at(T0 + seconds(20))
        h.at(T0 + seconds(30))
    sent = [m for m in h.dispatcher.sent if m.kwargs["scheduled_task_id"] == bad]
    assert sent == []
    runs = h.executions(bad)
    assert runs
    assert {e.status for e in runs} == {ExecutionStatus.FAILED}
    assert "handler_kwargs do not match the task's params" in (runs[0].error or "")
    assert "days" in (runs[0].error or "")
    assert "bogus" in (runs[0].error or "")
    assert h.schedule(bad).last_status is ExecutionStatus.FAILED
    reports = [r for r in caplog.records if "do not match the params" in r.getMessage()]
    assert len(reports) == 1  # once, not at every slot
    # the valid row is sent with its kwargs coerced by the params, as the API would
    coerced = [m.kwargs for m in h.dispatcher.sent if m.kwargs["scheduled_task_id"] == good]
    assert coerced
    assert coerced[0]["days"] == 3


def test_a_row_that_can_never_fire_is_disabled_with_an_error(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.sql(
        "INSERT INTO scheduled_tasks (name, task_type, task_name, cron_expression) "
        "VALUES ('broken', 'cron', 't.record', '61 * * * *')"
    )
    with caplog.at_level(logging.ERROR, logger="dataforge_scheduler"):
        h.at(T0)
        h.at(T0 + seconds(120))
    with h.runtime.session() as session:
        row = store.get_schedule_by_name(session, "broken")
    assert row.status is TaskStatus.DISABLED
    assert h.executions() == []
    assert sum("broken" in r.getMessage() for r in caplog.records) == 1


def _raw_due_row(h: Harness, name: str, *, handler_kwargs: str, task_name: str = RECORD) -> None:
    h.sql(
        "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, "
        "handler_kwargs, status, created_at, next_run_at) VALUES (:name, 'interval', "
        ":task, 10, :kwargs, 'active', :created, :due)",
        name=name,
        task=task_name,
        kwargs=handler_kwargs,
        created=T0,
        due=T0 + seconds(10),
    )


def test_a_row_with_malformed_kwargs_is_disabled_and_the_batch_still_goes_out(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    good = h.create(task_type="interval", interval_seconds=10)
    _raw_due_row(h, "bad-kwargs", handler_kwargs="[1]")  # raw SQL: not a JSON object
    h.clock.set(T0 + seconds(10.5))
    h.scheduler.max_interval = 0.01  # the wait inside tick() stays short

    with caplog.at_level(logging.ERROR, logger="dataforge_scheduler"):
        assert h.scheduler.tick() == 0.0

    assert [sent.kwargs for sent in h.dispatcher.sent] == [{"scheduled_task_id": good}]
    with h.runtime.session() as session:
        bad = store.get_schedule_by_name(session, "bad-kwargs")
    assert (bad.status, bad.next_run_at) == (TaskStatus.DISABLED, None)
    assert h.executions(bad.id) == []
    [error] = [r.getMessage() for r in caplog.records if "bad-kwargs" in r.getMessage()]
    assert "handler_kwargs" in error
    assert "disabled" in error


class _BrokenHook(DatabaseScheduler):
    """A subclass whose hook fails for one task name."""

    def is_registered(self, task_name: str) -> bool:
        if task_name == "t.hook_fails":
            raise RuntimeError("the hook failed (test)")
        return super().is_registered(task_name)


def test_a_row_whose_planning_fails_is_retried_later_and_the_batch_still_goes_out(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(engine, scheduler_cls=_BrokenHook)
    good = h.create(task_type="interval", interval_seconds=10)
    _raw_due_row(h, "hook-fails", handler_kwargs="{}", task_name="t.hook_fails")

    with caplog.at_level(logging.ERROR, logger="dataforge_scheduler"):
        result = h.at(T0 + seconds(10.5))

    assert [slot.scheduled_task_id for slot in result.sent] == [good]
    with h.runtime.session() as session:
        failing = store.get_schedule_by_name(session, "hook-fails")
    assert failing.status is TaskStatus.ACTIVE
    retry = seconds(_BrokenHook.retry_failed_row_seconds)
    assert failing.next_run_at == T0 + seconds(10.5) + retry
    assert any(
        "hook-fails" in r.getMessage() and "RuntimeError" in r.getMessage() for r in caplog.records
    )


def test_a_pass_with_nothing_due_is_one_statement_even_when_it_would_sweep(
    h: Harness,
) -> None:
    # one probe tells whether anything is due, unsent or without next_run_at
    h.create(task_type="interval", interval_seconds=3600)
    h.at(T0 + seconds(1))
    statements, listener = _count_statements(h.runtime.engine)
    try:
        h.at(T0 + seconds(2))
        soon = len([s for s in statements if s == "SELECT"])
        statements.clear()
        h.at(T0 + seconds(30 + h.scheduler.resend_after_seconds))
        later = len([s for s in statements if s == "SELECT"])
    finally:
        sa.event.remove(h.runtime.engine, "before_cursor_execute", listener)
    assert (soon, later) == (1, 1)


def test_a_pause_through_the_store_stops_dispatch_at_once(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=1)
    h.at(T0 + seconds(2))
    with h.runtime.session() as session:
        store.pause_schedule(session, sid, now=h.clock.now())
    h.at(T0 + seconds(10))
    assert [e.scheduled_for for e in h.executions(sid)] == [T0 + seconds(1), T0 + seconds(2)]


def test_a_raw_sql_pause_takes_effect_at_the_next_pass(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=1)
    h.at(T0 + seconds(2))
    h.sql("UPDATE scheduled_tasks SET status = 'paused' WHERE id = :id", id=sid)
    h.at(T0 + seconds(10))
    assert len(h.executions(sid)) == 2


def test_resuming_a_paused_schedule_never_bursts(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=60, misfire_policy="catch_up")
    h.at(T0 + seconds(60))
    with h.runtime.session() as session:
        store.pause_schedule(session, sid, now=h.clock.now())
    h.clock.set(T0 + timedelta(hours=3, seconds=10))
    with h.runtime.session() as session:
        store.resume_schedule(session, sid, now=h.clock.now(), default_timezone="UTC")
    assert h.at(T0 + timedelta(hours=3, seconds=20)).sent == ()
    result = h.at(T0 + timedelta(hours=3, seconds=60))
    assert [slot.scheduled_for for slot in result.sent] == [T0 + timedelta(hours=3, minutes=1)]


class _CrashOnSend(RecordingDispatcher):
    """Dies (like SIGKILL would, as far as this pass is concerned) right before sending."""

    def dispatch(self, run: Any) -> Any:
        raise KeyboardInterrupt("crash between claim and send")


def test_a_crash_between_claim_and_send_loses_no_slot(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=60)
    crashing = DatabaseScheduler(h.app, runtime=h.runtime, dispatcher=_CrashOnSend())
    h.clock.set(T0 + seconds(60))
    with pytest.raises(KeyboardInterrupt):
        crashing.run_pass()
    [claimed] = h.executions(sid)
    assert claimed.sent_at is None
    assert h.dispatcher.sent == []

    lease = h.scheduler.resend_after_seconds
    early = h.at(T0 + seconds(60 + lease / 2))
    assert early.sent == ()  # within the claim's lease: its scheduler may still send it
    assert early.next_sweep_at == T0 + seconds(60 + lease)  # the surviving beat's wake-up
    result = h.at(T0 + seconds(60 + lease))
    [sent] = h.dispatcher.sent
    assert sent.task_id == claimed.celery_task_id
    assert sent.headers["df_execution_id"] == claimed.id
    assert sent.headers["df_slot"] == (T0 + seconds(60)).isoformat()
    assert [slot.resend for slot in result.sent] == [True]
    assert h.executions(sid)[0].sent_at == T0 + seconds(60 + lease)
    h.at(T0 + seconds(100))
    assert len(h.dispatcher.sent) == 1


def test_a_stranded_slot_a_newer_slot_overtook_is_recorded_missed_not_raced(
    h: Harness,
) -> None:
    """A beat died after claiming slot 2 s; slot 3 s was claimed and sent meanwhile. Sent
    now, slot 2 s would race slot 3 s for the lock (one ``skipped``): under ``run_once``
    it is recorded ``missed`` naming the newer slot."""
    sid = h.create(task_type="interval", interval_seconds=1)
    h.at(T0 + seconds(1))
    crashing = DatabaseScheduler(h.app, runtime=h.runtime, dispatcher=_CrashOnSend())
    crashing.unstarted_wait_seconds = 0  # slot 1 never starts here: no worker
    h.clock.set(T0 + seconds(2))
    with pytest.raises(KeyboardInterrupt):
        crashing.run_pass()
    h.at(T0 + seconds(3))  # the survivor sends 3 s; 2 s is still within its lease
    h.at(T0 + seconds(2 + h.scheduler.resend_after_seconds + 0.1))
    rows = _by_status(h, sid)
    assert rows[ExecutionStatus.MISSED] == [T0 + seconds(2)]
    [stranded] = [e for e in h.executions(sid) if e.status is ExecutionStatus.MISSED]
    assert (T0 + seconds(3)).isoformat() in (stranded.error or "")
    assert [m.headers["df_slot"] for m in h.dispatcher.sent] == [
        (T0 + seconds(k)).isoformat() for k in (1, 3)
    ]


def test_slots_the_broker_refused_are_sent_once_it_is_back(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=60)
    h.dispatcher.down = True
    result = h.at(T0 + seconds(60))
    assert result.sent == ()
    assert [slot.scheduled_for for slot in result.unsent] == [T0 + seconds(60)]
    h.dispatcher.down = False
    h.at(T0 + seconds(80))
    [sent] = h.dispatcher.sent
    assert sent.task_id == h.executions(sid)[0].celery_task_id


class _BatchingDispatcher(RecordingDispatcher):
    """Buffers what a batch dispatches, as CeleryDispatcher does on Redis, and fails to
    write it while ``fail_batches`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_batches = False

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        before = len(self.sent)
        yield
        if self.fail_batches:
            del self.sent[before:]
            raise BackendUnavailable("could not write a batch: delivery is uncertain")


def _batching(h: Harness) -> tuple[_BatchingDispatcher, list[str]]:
    dispatcher = _BatchingDispatcher()
    h.dispatcher = dispatcher
    h.scheduler = h.new_scheduler()
    noted: list[str] = []
    h.scheduler.after_send = lambda slot, message: noted.append(slot.celery_task_id)  # type: ignore[method-assign]
    return dispatcher, noted


def test_a_batch_that_could_not_be_written_is_sent_again_one_by_one(h: Harness) -> None:
    dispatcher, noted = _batching(h)
    ids = [h.create(task_type="interval", interval_seconds=60) for _ in range(3)]
    dispatcher.fail_batches = True

    result = h.at(T0 + seconds(60))

    assert (len(result.sent), result.unsent) == (3, ())
    assert sorted(noted) == sorted(m.task_id for m in dispatcher.sent)
    assert len(dispatcher.sent) == 3, "the failed batch's messages are not counted"
    assert all(e.sent_at is not None for sid in ids for e in h.executions(sid))


def test_a_batch_the_broker_could_not_take_while_it_is_down_sends_none(h: Harness) -> None:
    dispatcher, noted = _batching(h)
    ids = [h.create(task_type="interval", interval_seconds=60) for _ in range(3)]
    dispatcher.fail_batches = True
    dispatcher.down = True

    result = h.at(T0 + seconds(60))

    assert (result.sent, len(result.unsent)) == ((), 3)
    assert noted == []
    assert all(e.sent_at is None for sid in ids for e in h.executions(sid))
    dispatcher.fail_batches = dispatcher.down = False
    h.at(T0 + seconds(65))  # past the claim's lease: the sweep sends them
    assert sorted(noted) == sorted(m.task_id for m in dispatcher.sent)
    assert len(dispatcher.sent) == 3
    assert all(e.sent_at is not None for sid in ids for e in h.executions(sid))


def test_two_schedulers_on_one_database_send_each_slot_once(h: Harness) -> None:
    ids = [h.create(task_type="interval", interval_seconds=1) for _ in range(3)]
    other = h.new_scheduler()
    for step in range(1, 9):
        h.clock.set(T0 + seconds(step + 0.5))
        (h.scheduler if step % 2 else other).run_pass()
        (other if step % 2 else h.scheduler).run_pass()
    task_ids = [s.task_id for s in h.dispatcher.sent]
    assert len(task_ids) == len(set(task_ids)) == 3 * 8
    for sid in ids:
        assert [e.scheduled_for for e in h.executions(sid)] == [
            T0 + seconds(k) for k in range(1, 9)
        ]


def _count_statements(engine: Any) -> tuple[list[str], Any]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]).split()[0].upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    return statements, record


@pytest.mark.parametrize("schedules", [1, 60])
def test_an_idle_pass_runs_the_same_few_statements_however_many_schedules(
    h: Harness, schedules: int
) -> None:
    for _ in range(schedules):
        h.create(task_type="interval", interval_seconds=3600)
    h.at(T0 + seconds(1))  # first pass
    statements, listener = _count_statements(h.runtime.engine)
    try:
        h.at(T0 + seconds(2))
    finally:
        sa.event.remove(h.runtime.engine, "before_cursor_execute", listener)
    # the probe: the earliest next_run_at, no fresh row, no unsent slot
    assert [s for s in statements if s not in {"BEGIN", "COMMIT"}] == ["SELECT"]


def test_many_due_schedules_are_claimed_with_set_based_statements(h: Harness) -> None:
    for _ in range(40):
        h.create(task_type="interval", interval_seconds=60)
    statements, listener = _count_statements(h.runtime.engine)
    try:
        result = h.at(T0 + seconds(60))
    finally:
        sa.event.remove(h.runtime.engine, "before_cursor_execute", listener)
    assert len(result.sent) == 40
    work = [s for s in statements if s not in {"BEGIN", "COMMIT"}]
    # probe, select due, insert, update next_run_at, min(), update sent_at
    assert work.count("INSERT") == 1
    assert work.count("UPDATE") <= 2 + (1 if h.runtime.engine.dialect.name == "sqlite" else 0)
    assert len(work) <= 8


@pytest.mark.postgres
def test_rows_another_scheduler_holds_are_skipped_not_waited_for(pg: Any) -> None:
    h = Harness(pg)
    sid = h.create(task_type="interval", interval_seconds=60)
    with pg.connect() as holder, holder.begin():
        holder.execute(
            sa.text("SELECT id FROM scheduled_tasks WHERE id = :id FOR UPDATE"), {"id": sid}
        )
        result = h.at(T0 + seconds(60))
        assert result.sent == ()
        assert result.next_run_at == T0 + seconds(60)  # still due: the holder will claim it
    assert [slot.scheduled_for for slot in h.at(T0 + seconds(61)).sent] == [T0 + seconds(60)]


# ---------------------------------------------------------------- max_runs


def test_max_runs_sends_that_many_slots_then_completes(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=10, max_runs=3)
    for k in range(1, 6):
        h.at(T0 + seconds(10 * k + 0.5))

    assert [e.scheduled_for for e in h.executions(sid)] == [T0 + seconds(10 * k) for k in (1, 2, 3)]
    assert len(h.dispatcher.sent) == 3
    row = h.schedule(sid)
    assert (row.status, row.max_runs, row.next_run_at) == (TaskStatus.COMPLETED, 0, None)

    with (
        h.runtime.session() as session,
        pytest.raises(ConflictError, match="used all its max_runs"),
    ):
        store.resume_schedule(session, sid, now=h.clock.now(), default_timezone="UTC")
    with h.runtime.session() as session:
        store.update_schedule(
            session,
            sid,
            {"max_runs": 1, "status": "active"},
            now=T0 + seconds(60),
            default_timezone="UTC",
        )
    h.at(T0 + seconds(70.5))
    h.at(T0 + seconds(80.5))
    assert len(h.dispatcher.sent) == 4
    assert h.schedule(sid).status is TaskStatus.COMPLETED


def test_max_runs_caps_a_catch_up_backlog_and_missed_slots_cost_nothing(h: Harness) -> None:
    sid = h.create(
        task_type="interval",
        interval_seconds=10,
        max_runs=2,
        misfire_policy="catch_up",
        overlap_policy="allow",
    )
    h.at(T0 + seconds(60.5))  # six slots due at once: two are claimed, then it completes

    assert [e.scheduled_for for e in h.executions(sid)] == [T0 + seconds(10), T0 + seconds(20)]
    assert h.schedule(sid).status is TaskStatus.COMPLETED

    skipper = h.create(task_type="interval", interval_seconds=10, max_runs=2)
    h.at(T0 + seconds(120.5))  # late past the grace: run_once runs the newest, misses the rest
    row = h.schedule(skipper)
    statuses = [e.status for e in h.executions(skipper)]
    assert statuses.count(ExecutionStatus.PENDING) == 1
    assert row.max_runs == 1, "missed slots did not run, so they cost nothing"
    assert row.status is TaskStatus.ACTIVE


def test_max_runs_is_checked(h: Harness) -> None:
    for bad in (0, -1, "2", 1.5):
        with pytest.raises(InvalidSchedule) as refused:
            h.create(task_type="interval", interval_seconds=10, max_runs=bad)
        assert refused.value.field == "max_runs"


def test_a_run_early_inside_max_runs_leaves_the_schedule_its_run(h: Harness) -> None:
    sid = h.create(task_type="interval", interval_seconds=10, max_runs=1, handler_kwargs={"a": 1})
    with h.runtime.session() as session:
        row = session.get(ScheduledTask, sid, with_for_update=True)
        assert row is not None
        slot = store.skip_next_slot(session, row, reason="ran early", now=h.clock.now())
    assert slot == T0 + seconds(10)

    h.at(T0 + seconds(10.5))  # the slot it counted on has a row: nothing sent, runs left
    row = h.schedule(sid)
    assert (row.status, row.max_runs, row.next_run_at) == (
        TaskStatus.ACTIVE,
        1,
        T0 + seconds(20),
    )
    h.at(T0 + seconds(20.5))
    assert len(h.dispatcher.sent) == 1
    assert (h.schedule(sid).status, h.schedule(sid).max_runs) == (TaskStatus.COMPLETED, 0)
    skipped = next(e for e in h.executions(sid) if e.scheduled_for == slot)
    assert skipped.kwargs == {"a": 1, "scheduled_task_id": sid}, "what the slot would have sent"


def test_a_skipped_slot_is_given_back_only_while_the_schedule_has_not_passed_it(
    h: Harness,
) -> None:
    sid = h.create(task_type="interval", interval_seconds=10)
    with h.runtime.session() as session:
        row = session.get(ScheduledTask, sid, with_for_update=True)
        assert row is not None
        slot = store.skip_next_slot(session, row, reason="ran early", now=h.clock.now())
    with h.runtime.session() as session:
        assert store.unskip_slot(session, sid, slot) is True
    assert [e.scheduled_for for e in h.executions(sid)] == []
    with h.runtime.session() as session:
        row = session.get(ScheduledTask, sid, with_for_update=True)
        assert row is not None
        store.skip_next_slot(session, row, reason="ran early", now=h.clock.now())
    h.at(T0 + seconds(10.5))  # the beat moves past it
    with h.runtime.session() as session:
        assert store.unskip_slot(session, sid, slot) is False
    (kept,) = h.executions(sid)
    assert kept.status is ExecutionStatus.SKIPPED
    assert kept.error is not None
    assert "the slot had passed" in kept.error
