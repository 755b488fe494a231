"""The subclass hooks, through the documented example (examples/custom_scheduler.py)
and small tracking subclasses."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from examples.custom_scheduler import PartitionedScheduler, WeekdaysOnly
from tests.unit.test_scheduler_pass import RECORD, T0, Harness, seconds

from dataforge_scheduler.celery.beat import ClaimedSlot, DatabaseScheduler, Message
from dataforge_scheduler.core.enums import TaskStatus
from dataforge_scheduler.core.triggers import Trigger
from dataforge_scheduler.sql.models import ScheduledTask


@pytest.fixture
def h(engine: Any) -> Harness:
    return Harness(engine, scheduler_cls=PartitionedScheduler)


def test_partitioned_schedulers_each_claim_only_their_queues(h: Harness) -> None:
    reports = h.create(task_type="interval", interval_seconds=60, queue="reports")
    exports = h.create(task_type="interval", interval_seconds=60, queue="exports")
    h.create(task_type="interval", interval_seconds=60)  # no queue: neither partition's
    first = h.new_scheduler(queues=["reports"])
    second = h.new_scheduler(queues=["exports", "archive"])
    assert isinstance(first, PartitionedScheduler)
    h.clock.set(T0 + seconds(60))

    assert [s.scheduled_task_id for s in first.run_pass().sent] == [reports]
    assert [s.scheduled_task_id for s in second.run_pass().sent] == [exports]
    partitions = {s.headers["x-partition"] for s in h.dispatcher.sent}
    assert partitions == {"reports", "archive,exports"}
    assert first.sent_per_task == {RECORD: 1}


def test_the_partition_filter_also_bounds_the_wait_and_the_resend_sweep(h: Harness) -> None:
    h.create(task_type="interval", interval_seconds=10, queue="exports")
    mine = h.create(task_type="interval", interval_seconds=60, queue="reports")
    scheduler = h.new_scheduler(queues=["reports"])
    h.clock.set(T0 + seconds(5))
    assert scheduler.run_pass().next_run_at == T0 + seconds(60)  # not the exports row's 10 s
    assert mine


def test_a_custom_trigger_fires_weekdays_only(h: Harness) -> None:
    sid = h.create(
        task_type="cron",
        cron_expression="0 6 * * *",
        description="daily report [weekdays]",
    )
    for day in range(7):  # T0 is a Monday
        h.at(T0 + timedelta(days=day, hours=19))
    weekdays = [e.scheduled_for.weekday() for e in h.executions(sid) if e.scheduled_for]
    assert weekdays == [1, 2, 3, 4, 0]  # Tue..Fri, no Saturday or Sunday, then Monday
    assert h.schedule(sid).next_run_at == T0 + timedelta(days=7, hours=18)  # Tuesday 06:00


def test_weekdays_only_gives_up_on_a_trigger_that_only_fires_at_weekends() -> None:
    class Saturdays:
        def next_after(self, instant: Any) -> Any:
            return instant + timedelta(days=7)

    trigger = WeekdaysOnly(Saturdays(), ZoneInfo("UTC"))
    trigger.max_skips = 5
    assert trigger.next_after(T0 + timedelta(days=5)) is None


class Tracking(DatabaseScheduler):
    """Routes every message to a tenant queue and remembers each hook call."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        self.calls: list[tuple[str, Any]] = []
        super().__init__(app, **kwargs)

    def trigger_for_row(self, row: ScheduledTask) -> Trigger:
        self.calls.append(("trigger_for_row", row.id))
        return super().trigger_for_row(row)

    def message_for(self, slot: ClaimedSlot) -> Message:
        message = super().message_for(slot)
        self.calls.append(("message_for", slot.execution_id))
        options = {**message.options, "queue": f"tenant-{slot.kwargs['tenant']}"}
        return replace(message, options=options, headers={**message.headers, "x-tenant": 1})

    def after_send(self, slot: ClaimedSlot, message: Message) -> None:
        self.calls.append(("after_send", message.options["queue"]))
        if slot.kwargs["tenant"] == "bad":
            raise RuntimeError("metrics backend down")


def test_message_for_routes_and_after_send_sees_every_send(engine: Any) -> None:
    h = Harness(engine, scheduler_cls=Tracking)
    sid = h.create(task_type="interval", interval_seconds=60, handler_kwargs={"tenant": "acme"})
    h.at(T0 + seconds(60))
    [sent] = h.dispatcher.sent
    assert sent.options["queue"] == "tenant-acme"
    assert sent.headers["x-tenant"] == 1
    assert sent.headers["df_slot"] == (T0 + seconds(60)).isoformat()
    scheduler = h.scheduler
    assert isinstance(scheduler, Tracking)
    assert [name for name, _ in scheduler.calls] == ["trigger_for_row", "message_for", "after_send"]
    assert sid


def test_a_failing_after_send_is_logged_and_the_send_still_counts(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(engine, scheduler_cls=Tracking)
    sid = h.create(task_type="interval", interval_seconds=60, handler_kwargs={"tenant": "bad"})
    with caplog.at_level(logging.ERROR, logger="dataforge_scheduler"):
        result = h.at(T0 + seconds(60))
    assert len(result.sent) == 1
    assert h.executions(sid)[0].sent_at is not None
    assert any("after_send failed" in r.getMessage() for r in caplog.records)


class _BrokenTrigger(DatabaseScheduler):
    def trigger_for_row(self, row: ScheduledTask) -> Trigger:
        raise RuntimeError("bug in a custom trigger")


def test_a_raising_trigger_hook_postpones_the_row_without_disabling_it(engine: Any) -> None:
    h = Harness(engine, scheduler_cls=_BrokenTrigger)
    sid = h.create(task_type="interval", interval_seconds=60)
    h.at(T0 + seconds(60))
    row = h.schedule(sid)
    assert row.status is TaskStatus.ACTIVE
    assert row.next_run_at == T0 + seconds(60 + 60)
    assert h.dispatcher.sent == []
