"""When the service's schedules fire: the real ``DatabaseScheduler`` on a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dataforge_scheduler import ExecutionStatus
from dataforge_scheduler.core.clock import ManualClock

SHANGHAI = "Asia/Shanghai"


@pytest.fixture
def dataforge_clock() -> ManualClock:
    return ManualClock(datetime(2024, 3, 1, 0, 0, tzinfo=UTC))  # 08:00 in Shanghai


def test_the_nightly_sync_fires_at_two_in_shanghai(
    dataforge_scheduler: Any, dataforge_schedule_factory: Any
) -> None:
    schedule = dataforge_schedule_factory.make(
        task_name="dataforge.sync_accounts",
        task_type="cron",
        cron_expression="0 2 * * *",
        timezone=SHANGHAI,
        handler_kwargs={"count": 3},
    )

    sent = dataforge_scheduler.advance(timedelta(days=2))

    assert [s.slot for s in sent] == [
        datetime(2024, 3, 1, 18, 0, tzinfo=UTC),  # 2024-03-02 02:00 CST
        datetime(2024, 3, 2, 18, 0, tzinfo=UTC),
    ]
    assert {s.slot_in(SHANGHAI).hour for s in sent} == {2}
    assert {s.task_name for s in sent} == {"dataforge.sync_accounts"}
    assert sent[0].kwargs == {"count": 3, "scheduled_task_id": schedule.id}
    assert dataforge_schedule_factory.get(schedule).next_run_at == datetime(
        2024, 3, 3, 18, 0, tzinfo=UTC
    )


def test_a_fired_schedule_runs_on_the_worker_with_its_kwargs(
    dataforge_scheduler: Any, dataforge_schedule_factory: Any, dataforge_run_task: Any
) -> None:
    schedule = dataforge_schedule_factory.make(
        task_name="dataforge.cleanup_expired",
        task_type="cron",
        cron_expression="30 3 * * 0",  # Sundays 03:30
        timezone=SHANGHAI,
        handler_kwargs={"days": 7},
    )

    [sent] = dataforge_scheduler.advance(timedelta(days=7))
    row = dataforge_run_task(sent.scheduled_task_id)

    assert sent.slot == datetime(2024, 3, 3, 3, 30, tzinfo=ZoneInfo(SHANGHAI))  # a Sunday
    assert sent.scheduled_task_id == schedule.id
    assert row.status is ExecutionStatus.SUCCESS
    assert row.kwargs["days"] == 7
