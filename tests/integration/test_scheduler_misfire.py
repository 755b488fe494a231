"""Misfire policies after a simulated downtime: the clock jumps an hour, one pass runs.

On PostgreSQL and SQLite. Each schedule fires every minute from T0; the scheduler ran
the first slot, then was "down" for an hour. The latest ``catch_up_max_runs`` (5) late
slots get rows: run, ``queued`` (a catch_up backlog goes one run at a time) or
``missed`` with the reason.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tests.scheduler_harness import T0, Harness, seconds

from dataforge_scheduler.core.enums import ExecutionStatus, TaskStatus

MINUTE = timedelta(minutes=1)
BACK = T0 + timedelta(hours=1, minutes=1, seconds=30)  # when the scheduler comes back


@pytest.fixture
def h(engine: Any) -> Harness:
    return Harness(engine, catch_up_max_runs=5)


def _after_downtime(h: Harness, policy: str, **fields: Any) -> tuple[int, list[Any]]:
    sid = h.create(task_type="interval", interval_seconds=60, misfire_policy=policy, **fields)
    h.at(T0 + seconds(60))  # the last slot before the downtime
    result = h.at(BACK)
    return sid, [slot.scheduled_for for slot in result.sent]


def _statuses(h: Harness, sid: int) -> list[tuple[Any, ExecutionStatus]]:
    return [(e.scheduled_for, e.status) for e in h.executions(sid)]


def test_run_once_sends_one_run_for_the_missed_slots_then_follows_the_grid(h: Harness) -> None:
    sid, sent = _after_downtime(h, "run_once")
    assert sent == [T0 + 61 * MINUTE]  # the latest missed slot, once
    assert _statuses(h, sid)[1:] == [
        *((T0 + k * MINUTE, ExecutionStatus.MISSED) for k in range(57, 61)),
        (T0 + 61 * MINUTE, ExecutionStatus.PENDING),
    ]
    assert h.schedule(sid).next_run_at == T0 + 62 * MINUTE
    assert [slot.scheduled_for for slot in h.at(T0 + 62 * MINUTE).sent] == [T0 + 62 * MINUTE]


def test_skip_sends_nothing_and_resumes_at_the_next_future_slot(h: Harness) -> None:
    sid, sent = _after_downtime(h, "skip")
    assert sent == []
    assert h.schedule(sid).next_run_at == T0 + 62 * MINUTE
    assert _statuses(h, sid)[1:] == [
        (T0 + k * MINUTE, ExecutionStatus.MISSED) for k in range(57, 62)
    ]
    missed = h.executions(sid)[1:]
    assert all("misfire policy skip runs no late slot" in (e.error or "") for e in missed)


def test_catch_up_sends_the_latest_missed_slots_up_to_the_bound(h: Harness) -> None:
    sid, sent = _after_downtime(h, "catch_up")
    # catch_up_max_runs = 5: the oldest goes now, the others wait their turn
    assert sent == [T0 + 57 * MINUTE]
    assert _statuses(h, sid)[1:] == [
        (T0 + 57 * MINUTE, ExecutionStatus.PENDING),
        *((T0 + k * MINUTE, ExecutionStatus.QUEUED) for k in range(58, 62)),
    ]
    assert h.schedule(sid).next_run_at == T0 + 62 * MINUTE


def test_a_late_slot_within_the_rows_own_grace_is_not_a_misfire(h: Harness) -> None:
    sid = h.create(
        task_type="interval",
        interval_seconds=60,
        misfire_policy="skip",
        misfire_grace_seconds=7200,
    )
    h.at(T0 + seconds(60))
    result = h.at(T0 + 5 * MINUTE + seconds(1))
    # on time, but four slots at once: the newest runs, the backlog does not race it
    assert [slot.scheduled_for for slot in result.sent] == [T0 + 5 * MINUTE]
    assert [status for _, status in _statuses(h, sid)[1:]] == [ExecutionStatus.MISSED] * 3 + [
        ExecutionStatus.PENDING
    ]
    assert h.schedule(sid).next_run_at == T0 + 6 * MINUTE


def test_a_zero_grace_makes_any_late_slot_a_misfire(h: Harness) -> None:
    sid = h.create(
        task_type="interval", interval_seconds=60, misfire_policy="skip", misfire_grace_seconds=0
    )
    assert h.at(T0 + seconds(61)).sent == ()
    assert h.schedule(sid).next_run_at == T0 + 2 * MINUTE


def test_a_date_schedule_missed_during_downtime_follows_its_policy(h: Harness) -> None:
    once = h.create(task_type="date", run_at=T0 + seconds(30), misfire_policy="run_once")
    never = h.create(task_type="date", run_at=T0 + seconds(30), misfire_policy="skip")
    result = h.at(BACK)
    assert [slot.scheduled_task_id for slot in result.sent] == [once]
    assert h.schedule(once).status is TaskStatus.COMPLETED
    assert h.schedule(never).status is TaskStatus.COMPLETED
    assert _statuses(h, never) == [(T0 + seconds(30), ExecutionStatus.MISSED)]


def test_a_cron_schedule_catches_up_in_its_own_timezone(h: Harness) -> None:
    # 09:00 New York every weekday, made on Friday at 12:00 UTC; down until Tuesday
    h.clock.set(T0 + timedelta(days=4))
    sid = h.create(
        task_type="cron",
        cron_expression="0 9 * * 1-5",
        timezone="America/New_York",
        misfire_policy="catch_up",
    )
    h.at(T0 + timedelta(days=4))  # Friday 12:00 UTC: fires nothing, next is 14:00 UTC
    result = h.at(T0 + timedelta(days=8, hours=3))  # Tuesday 15:00 UTC
    fired = [slot.scheduled_for.isoformat() for slot in result.sent]
    assert fired == ["2026-03-06T14:00:00+00:00"]  # the oldest now, the others in turn
    assert [(at.isoformat(), status.value) for at, status in _statuses(h, sid)] == [
        ("2026-03-06T14:00:00+00:00", "pending"),  # Friday, EST
        ("2026-03-09T13:00:00+00:00", "queued"),  # Monday, EDT (DST began Sunday 8 March)
        ("2026-03-10T13:00:00+00:00", "queued"),  # Tuesday
    ]
    assert h.schedule(sid).next_run_at is not None
