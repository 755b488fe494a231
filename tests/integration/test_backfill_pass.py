"""A backfill's slots sent by DatabaseScheduler passes, driven by a ManualClock on
PostgreSQL and SQLite (the ``engine`` fixture): one at a time in slot order, each once
nothing else of its schedule is open; apart from the schedule's own slots, which they
neither hold back nor race; never dropped by the misfire policy; back in line when the
broker refuses them; recorded ``missed`` when their schedule is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from tests.scheduler_harness import T0, Harness, seconds

from dataforge_scheduler.control import backfill
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

HOUR = timedelta(hours=1)


@pytest.fixture
def h(engine: Any) -> Iterator[Harness]:
    harness = Harness(engine)
    yield harness
    harness.scheduler.close()


def _hourly(h: Harness, **fields: Any) -> int:
    return h.create(task_type="cron", cron_expression="0 * * * *", **fields)


def _backfill(h: Harness, sid: int, hours: int) -> list[datetime]:
    done = backfill(h.runtime, sid, start=T0 - hours * HOUR, end=T0)
    return [slot.scheduled_for for slot in done.created]


def _row(h: Harness, sid: int, slot: datetime) -> TaskExecution:
    [row] = [e for e in h.executions(sid) if e.scheduled_for == slot]
    return row


def _end(h: Harness, row: TaskExecution) -> None:
    with h.runtime.session() as session:
        store.finish_run(
            session,
            celery_task_id=row.celery_task_id,
            status=ExecutionStatus.SUCCESS,
            now=h.clock.now(),
        )
        session.commit()


def test_backfill_slots_go_one_at_a_time_each_after_the_one_before_ended(h: Harness) -> None:
    sid = _hourly(h, expire_seconds=30)
    slots = _backfill(h, sid, 3)
    assert slots == [T0 - 3 * HOUR, T0 - 2 * HOUR, T0 - HOUR]

    sent: list[datetime] = []
    for step in range(3):
        now = T0 + seconds(1 + step)
        result = h.at(now)
        assert [s.scheduled_for for s in result.sent] == [slots[step]]
        assert result.next_sweep_at is not None, "slots still wait: the beat looks again soon"
        assert h.at(now + seconds(0.5)).sent == (), "the run before has not ended"
        message = h.dispatcher.sent[-1]
        assert message.headers["df_trigger"] == "backfill"
        assert message.headers["df_slot"] == slots[step].isoformat()
        # a backfill run expires counting from its send, not from its long-past slot
        assert message.options["expires"] == now + seconds(30)
        row = _row(h, sid, slots[step])
        assert (row.status, row.trigger, row.sent_at) == (
            ExecutionStatus.PENDING,
            ExecutionTrigger.BACKFILL,
            now,
        )
        sent.append(slots[step])
        _end(h, row)
    assert sent == slots
    assert h.at(T0 + seconds(10)).sent == ()
    assert {e.status for e in h.executions(sid)} == {ExecutionStatus.SUCCESS}


def test_the_misfire_policy_never_drops_a_backfill_slot(h: Harness) -> None:
    # run_once and skip record every older unsent slot missed; a backfill's wait theirs
    sid = _hourly(h, misfire_policy="skip")
    slots = _backfill(h, sid, 2)
    first = h.at(T0 + seconds(1))
    assert [s.scheduled_for for s in first.sent] == [slots[0]]
    assert _row(h, sid, slots[1]).status is ExecutionStatus.QUEUED
    assert ExecutionStatus.MISSED not in {e.status for e in h.executions(sid)}


def test_a_backfill_neither_holds_back_nor_races_the_schedules_own_slots(h: Harness) -> None:
    h.scheduler.unstarted_wait_seconds = 3600  # a sent run is in flight until it ends
    sid = _hourly(h, overlap_policy="buffer_one")
    slots = _backfill(h, sid, 2)
    own = T0 + HOUR
    # the schedule's own slot falls due before the backfill's first pass
    result = h.at(own + seconds(1))
    assert [(s.scheduled_for, s.trigger) for s in result.sent] == [
        (own, ExecutionTrigger.SCHEDULE)
    ], "the own slot is sent, and no backfill slot beside it"
    assert {_row(h, sid, slot).status for slot in slots} == {ExecutionStatus.QUEUED}
    _end(h, _row(h, sid, own))
    assert [s.scheduled_for for s in h.at(own + seconds(2)).sent] == [slots[0]]

    # the next own slot finds a backfill run going: its overlap policy decides, and
    # the backfill slot still waiting is not "the one slot buffer_one lets wait"
    result = h.at(own + HOUR + seconds(1))
    assert result.sent == ()
    assert _row(h, sid, own + HOUR).status is ExecutionStatus.QUEUED
    _end(h, _row(h, sid, slots[0]))
    # the own slot, waiting behind that run, goes first; the backfill after it
    assert [s.scheduled_for for s in h.at(own + HOUR + seconds(2)).sent] == [own + HOUR]
    _end(h, _row(h, sid, own + HOUR))
    assert [s.scheduled_for for s in h.at(own + HOUR + seconds(3)).sent] == [slots[1]]


def test_a_refused_backfill_slot_goes_back_in_line(h: Harness) -> None:
    sid = _hourly(h)
    slots = _backfill(h, sid, 2)
    h.dispatcher.down = True
    result = h.at(T0 + seconds(1))
    assert result.sent == ()
    assert [s.scheduled_for for s in result.unsent] == [slots[0]]
    row = _row(h, sid, slots[0])
    assert (row.status, row.sent_at) == (ExecutionStatus.QUEUED, None)
    h.dispatcher.down = False
    assert [s.scheduled_for for s in h.at(T0 + seconds(3)).sent] == [slots[0]]


def test_backfill_slots_of_a_deleted_schedule_are_recorded_missed(h: Harness) -> None:
    sid = _hourly(h)
    slots = _backfill(h, sid, 2)
    with h.runtime.session() as session:
        store.delete_schedule(session, sid)
        session.commit()
    assert h.at(T0 + seconds(1)).sent == ()
    rows = [e for e in h.executions() if e.scheduled_for in slots]
    assert [(e.status, e.scheduled_task_id) for e in rows] == [(ExecutionStatus.MISSED, None)] * 2
    assert {e.error for e in rows} == {"missed: its schedule was deleted before the slot was sent"}
