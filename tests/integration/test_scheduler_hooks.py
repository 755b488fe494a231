"""The subclass hooks, through the documented example (examples/custom_scheduler.py)
and small tracking subclasses, and the dispatcher's ``message_for``, which the beat and
"run now" share."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from examples.custom_scheduler import (
    PartitionedScheduler,
    TenantDispatcher,
    WeekdaysOnly,
    tenant_routed,
)
from tests.scheduler_harness import RECORD, T0, Harness, seconds

from dataforge_scheduler.celery.beat import ClaimedSlot, DatabaseScheduler
from dataforge_scheduler.control import run_now
from dataforge_scheduler.core.enums import ExecutionTrigger, TaskStatus
from dataforge_scheduler.core.messages import RunMessage
from dataforge_scheduler.core.triggers import Trigger
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.testing import RecordingDispatcher


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
    assert first.sent_per_task == {RECORD: 1}
    assert isinstance(second, PartitionedScheduler)
    assert second.sent_per_task == {RECORD: 1}


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


class TenantRecorder(RecordingDispatcher):
    """The example's tenant routing on the recording double, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.built = 0

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        self.built += 1
        return tenant_routed(super().message_for(run), run)


class Tracking(DatabaseScheduler):
    """Remembers each hook call; fails ``after_send`` for the tenant "bad"."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        self.calls: list[tuple[str, Any]] = []
        super().__init__(app, **kwargs)

    def trigger_for_row(self, row: ScheduledTask) -> Trigger:
        self.calls.append(("trigger_for_row", row.id))
        return super().trigger_for_row(row)

    def after_send(self, slot: ClaimedSlot, message: RunMessage) -> None:
        self.calls.append(("after_send", message.options.get("queue")))
        if slot.kwargs["tenant"] == "bad":
            raise RuntimeError("metrics backend down")


def _tenant_harness(engine: Any) -> Harness:
    h = Harness(engine, scheduler_cls=Tracking)
    h.dispatcher = TenantRecorder()
    h.runtime.dispatcher = h.dispatcher
    h.scheduler = h.new_scheduler()
    return h


def test_the_dispatcher_routes_slots_and_after_send_sees_every_send(engine: Any) -> None:
    h = _tenant_harness(engine)
    sid = h.create(task_type="interval", interval_seconds=60, handler_kwargs={"tenant": "acme"})
    h.at(T0 + seconds(60))
    [sent] = h.dispatcher.sent
    assert sent.options["queue"] == "tenant-acme"
    assert sent.headers["x-tenant"] == "acme"
    assert sent.headers["df_slot"] == (T0 + seconds(60)).isoformat()
    scheduler = h.scheduler
    assert isinstance(scheduler, Tracking)
    assert scheduler.calls == [("trigger_for_row", sid), ("after_send", "tenant-acme")]


def test_run_now_is_published_by_the_same_message_for_as_the_beat(engine: Any) -> None:
    h = _tenant_harness(engine)
    sid = h.create(task_type="manual", handler_kwargs={"tenant": "acme"})
    done = run_now(h.runtime, schedule_id=sid, validate=False)
    [sent] = h.dispatcher.sent
    assert h.dispatcher.built == 1
    assert sent.task_id == done.run.celery_task_id
    assert sent.options["queue"] == "tenant-acme"
    assert sent.headers["x-tenant"] == "acme"
    assert sent.headers["df_trigger"] == ExecutionTrigger.MANUAL.value
    assert "df_slot" not in sent.headers
    [row] = h.executions(sid)
    assert row.sent_at is not None


def test_the_example_tenant_dispatcher_routes_only_runs_that_name_a_tenant() -> None:
    dispatcher = TenantDispatcher(Celery("tenant-example", set_as_current=False))
    tenant = ClaimedSlot(1, "c-1", 7, "s", RECORD, T0, {"tenant": "acme", "scheduled_task_id": 7})
    plain = ClaimedSlot(2, "c-2", 7, "s", RECORD, T0, {"scheduled_task_id": 7}, queue="default")
    assert dispatcher.message_for(tenant).options["queue"] == "tenant-acme"
    assert dispatcher.message_for(plain).options == {"queue": "default"}
    assert "x-tenant" not in dispatcher.message_for(plain).headers


def test_a_scheduler_subclass_defining_message_for_is_refused_at_class_creation() -> None:
    with pytest.raises(ConfigurationError, match="dispatcher's hook") as caught:

        class _Old(DatabaseScheduler):
            def message_for(self, slot: ClaimedSlot) -> RunMessage:
                raise AssertionError("never called")

    assert caught.value.field == "message_for"


def test_a_failing_after_send_is_logged_and_the_send_still_counts(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = _tenant_harness(engine)
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
