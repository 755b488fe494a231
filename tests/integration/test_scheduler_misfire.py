"""Misfire policies after a simulated downtime: the clock jumps an hour, one pass runs.

On PostgreSQL and SQLite. Each schedule fires every minute from T0; the scheduler ran
the first slot, then was "down" for an hour.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tests.scheduler_harness import T0, Harness, seconds

from dataforge_scheduler.core.enums import TaskStatus

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


def test_run_once_sends_one_run_for_the_missed_slots_then_follows_the_grid(h: Harness) -> None:
    sid, sent = _after_downtime(h, "run_once")
    assert sent == [T0 + 61 * MINUTE]  # the latest missed slot, once
    assert h.schedule(sid).next_run_at == T0 + 62 * MINUTE
    assert [slot.scheduled_for for slot in h.at(T0 + 62 * MINUTE).sent] == [T0 + 62 * MINUTE]


def test_skip_sends_nothing_and_resumes_at_the_next_future_slot(h: Harness) -> None:
    sid, sent = _after_downtime(h, "skip")
    assert sent == []
    assert h.schedule(sid).next_run_at == T0 + 62 * MINUTE
    assert len(h.executions(sid)) == 1


def test_catch_up_sends_the_latest_missed_slots_up_to_the_bound(h: Harness) -> None:
    sid, sent = _after_downtime(h, "catch_up")
    assert sent == [T0 + k * MINUTE for k in range(57, 62)]  # catch_up_max_runs = 5
    assert h.schedule(sid).next_run_at == T0 + 62 * MINUTE
    assert len(h.executions(sid)) == 1 + 5


def test_a_late_slot_within_the_rows_own_grace_is_not_a_misfire(h: Harness) -> None:
    sid = h.create(
        task_type="interval",
        interval_seconds=60,
        misfire_policy="skip",
        misfire_grace_seconds=7200,
    )
    h.at(T0 + seconds(60))
    result = h.at(T0 + 5 * MINUTE + seconds(1))
    assert [slot.scheduled_for for slot in result.sent] == [T0 + k * MINUTE for k in (2, 3, 4, 5)]
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
    assert h.executions(never) == []


def test_a_cron_schedule_catches_up_in_its_own_timezone(h: Harness) -> None:
    # 09:00 New York every weekday; down from Friday to Tuesday morning
    sid = h.create(
        task_type="cron",
        cron_expression="0 9 * * 1-5",
        timezone="America/New_York",
        misfire_policy="catch_up",
    )
    h.at(T0 + timedelta(days=4))  # Friday 12:00 UTC: fires nothing, next is 14:00 UTC
    result = h.at(T0 + timedelta(days=8, hours=3))  # Tuesday 15:00 UTC
    fired = [slot.scheduled_for.isoformat() for slot in result.sent]
    assert fired == [
        "2026-03-06T14:00:00+00:00",  # Friday, EST
        "2026-03-09T13:00:00+00:00",  # Monday, EDT (DST began Sunday 8 March)
        "2026-03-10T13:00:00+00:00",  # Tuesday
    ]
    assert h.schedule(sid).next_run_at is not None
