"""The slot arithmetic of a pass: on-time slots, the misfire policies, first runs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataforge_scheduler.core.backlog import InFlight
from dataforge_scheduler.core.enums import ExecutionStatus, MisfirePolicy, TaskStatus, TaskType
from dataforge_scheduler.core.slots import RowPlan
from dataforge_scheduler.core.timing import (
    SlotPlan,
    first_run_advance,
    latest_slots,
    plan_row,
    plan_slots,
)
from dataforge_scheduler.core.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    fire_times,
)
from dataforge_scheduler.sql.models import ScheduledTask

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
MINUTE = timedelta(minutes=1)
GRACE = timedelta(seconds=60)


def _every_minute() -> IntervalTrigger:
    return IntervalTrigger(60, T0)


def _plan(policy: MisfirePolicy, *, due: datetime, now: datetime, catch_up: int = 10) -> SlotPlan:
    return plan_slots(
        _every_minute(),
        due,
        now,
        policy=policy,
        grace=GRACE,
        catch_up_max_runs=catch_up,
        max_slots=1000,
    )


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_an_on_time_slot_runs_whatever_the_policy(policy: MisfirePolicy) -> None:
    due = T0 + MINUTE
    plan = plan_slots(
        _every_minute(),
        due,
        due + timedelta(seconds=2),
        policy=policy,
        grace=GRACE,
        catch_up_max_runs=10,
        max_slots=1000,
    )
    assert plan.slots == (due,)
    assert plan.next_run_at == due + MINUTE
    assert plan.late is False


def test_every_slot_within_the_grace_period_runs() -> None:
    trigger = IntervalTrigger(1, T0)
    due = T0 + timedelta(seconds=1)
    plan = plan_slots(
        trigger,
        due,
        due + timedelta(seconds=4.5),
        policy=MisfirePolicy.SKIP,
        grace=GRACE,
        catch_up_max_runs=1,
        max_slots=1000,
    )
    assert plan.slots == tuple(due + timedelta(seconds=k) for k in range(5))
    assert plan.next_run_at == due + timedelta(seconds=5)
    assert plan.late is False


def test_on_time_slots_beyond_max_slots_are_left_due_for_the_next_pass() -> None:
    trigger = IntervalTrigger(1, T0)
    due = T0 + timedelta(seconds=1)
    plan = plan_slots(
        trigger,
        due,
        due + timedelta(seconds=30),
        policy=MisfirePolicy.RUN_ONCE,
        grace=GRACE,
        catch_up_max_runs=1,
        max_slots=10,
    )
    assert len(plan.slots) == 10
    assert plan.next_run_at == due + timedelta(seconds=10)


def _due_row(policy: MisfirePolicy, *, overlap: str = "skip", task_type: str = "interval") -> Any:
    return SimpleNamespace(
        id=7,
        name="every-minute",
        task_name="t.record",
        task_type=task_type,
        handler_kwargs={},
        next_run_at=None,
        start_at=None,
        end_at=None,
        created_at=T0,
        misfire_policy=policy.value,
        queue=None,
        priority=None,
        expire_seconds=None,
        overlap_policy=overlap,
        max_runs=None,
    )


def _row_plan(
    policy: MisfirePolicy,
    *,
    due: datetime,
    now: datetime,
    overlap: str = "skip",
    trigger: Any = None,
    in_flight: InFlight | None = None,
) -> dict[ExecutionStatus, list[datetime]]:
    row = _due_row(policy, overlap=overlap)
    row.next_run_at = due
    ids = itertools.count()
    plan = plan_row(
        row,
        trigger or _every_minute(),
        now=now,
        grace=GRACE,
        catch_up_max_runs=10,
        max_slots=1000,
        new_task_id=lambda: f"id-{next(ids)}",
        in_flight=in_flight,
    )
    found: dict[ExecutionStatus, list[datetime]] = {}
    for slot in plan.slots:
        found.setdefault(slot.status, []).append(slot.scheduled_for)
        assert (slot.error or "").startswith("missed: ") == (slot.status is ExecutionStatus.MISSED)
        assert (slot.error or "").startswith("skipped: ") == (
            slot.status is ExecutionStatus.SKIPPED
        )
    return found


def test_late_slots_are_the_latest_catch_up_max_runs_whatever_the_policy() -> None:
    due = T0 + MINUTE
    now = due + timedelta(hours=1, seconds=30)
    for policy in MisfirePolicy:
        plan = _plan(policy, due=due, now=now)
        assert plan.slots == tuple(T0 + k * MINUTE for k in range(52, 62))
        assert plan.next_run_at == T0 + 62 * MINUTE
        assert plan.late is True


def test_run_once_after_an_hour_down_runs_the_latest_missed_slot_once() -> None:
    due = T0 + MINUTE
    rows = _row_plan(MisfirePolicy.RUN_ONCE, due=due, now=due + timedelta(hours=1, seconds=30))
    assert rows == {
        ExecutionStatus.PENDING: [T0 + 61 * MINUTE],
        ExecutionStatus.MISSED: [T0 + k * MINUTE for k in range(52, 61)],
    }


def test_run_once_runs_only_the_newest_late_slot_even_with_overlap_allow() -> None:
    due = T0 + MINUTE
    now = due + timedelta(hours=1, seconds=30)
    rows = _row_plan(MisfirePolicy.RUN_ONCE, due=due, now=now, overlap="allow")
    assert rows[ExecutionStatus.PENDING] == [T0 + 61 * MINUTE]


def test_skip_after_an_hour_down_runs_nothing_and_records_the_late_slots_missed() -> None:
    due = T0 + MINUTE
    rows = _row_plan(MisfirePolicy.SKIP, due=due, now=due + timedelta(hours=1, seconds=30))
    assert rows == {ExecutionStatus.MISSED: [T0 + k * MINUTE for k in range(52, 62)]}
    plan = _plan(MisfirePolicy.SKIP, due=due, now=due + timedelta(hours=1, seconds=30))
    assert plan.next_run_at == T0 + 62 * MINUTE


def test_a_late_catch_up_backlog_sends_the_oldest_and_queues_the_rest_in_order() -> None:
    due = T0 + MINUTE
    now = due + timedelta(minutes=5, seconds=30)
    assert _row_plan(MisfirePolicy.CATCH_UP, due=due, now=now) == {
        ExecutionStatus.PENDING: [due],
        ExecutionStatus.QUEUED: [due + k * MINUTE for k in range(1, 6)],
    }
    # no lock (allow): no reason to wait, they all go
    assert _row_plan(MisfirePolicy.CATCH_UP, due=due, now=now, overlap="allow") == {
        ExecutionStatus.PENDING: [due + k * MINUTE for k in range(6)],
    }
    # queued slots waiting already: the new ones queue behind them
    waiting = InFlight(waiting=2)
    assert _row_plan(MisfirePolicy.CATCH_UP, due=due, now=due + seconds_(1), in_flight=waiting) == {
        ExecutionStatus.QUEUED: [due],
    }


def test_an_on_time_backlog_of_one_schedule_never_races_itself() -> None:
    due = T0 + MINUTE
    now = due + 3 * MINUTE  # four slots within a 5-minute grace
    grace = timedelta(minutes=5)
    row = _due_row(MisfirePolicy.RUN_ONCE)
    row.next_run_at = due
    plan = plan_row(
        row,
        _every_minute(),
        now=now,
        grace=grace,
        catch_up_max_runs=10,
        max_slots=1000,
        new_task_id=lambda: "x",
    )
    statuses = [(slot.scheduled_for, slot.status) for slot in plan.slots]
    assert statuses == [
        *((due + k * MINUTE, ExecutionStatus.MISSED) for k in range(3)),
        (due + 3 * MINUTE, ExecutionStatus.PENDING),
    ]
    assert "newer slot" in (plan.slots[0].error or "")


def seconds_(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_catch_up_runs_the_latest_missed_slots_up_to_the_bound() -> None:
    due = T0 + MINUTE
    now = due + timedelta(hours=1, seconds=30)
    plan = _plan(MisfirePolicy.CATCH_UP, due=due, now=now, catch_up=5)
    assert plan.slots == tuple(T0 + k * MINUTE for k in range(57, 62))
    assert plan.next_run_at == T0 + 62 * MINUTE


def test_catch_up_runs_every_missed_slot_when_fewer_than_the_bound() -> None:
    due = T0 + MINUTE
    plan = _plan(MisfirePolicy.CATCH_UP, due=due, now=due + 3 * MINUTE, catch_up=10)
    assert plan.slots == (due, due + MINUTE, due + 2 * MINUTE, due + 3 * MINUTE)


def test_a_date_schedule_found_late_runs_once_with_run_once_and_never_with_skip() -> None:
    run_at = T0 + MINUTE
    later = run_at + timedelta(hours=2)
    for policy, status in [
        (MisfirePolicy.RUN_ONCE, ExecutionStatus.PENDING),
        (MisfirePolicy.SKIP, ExecutionStatus.MISSED),
    ]:
        plan = plan_slots(
            DateTrigger(run_at),
            run_at,
            later,
            policy=policy,
            grace=GRACE,
            catch_up_max_runs=10,
            max_slots=1000,
        )
        assert plan.slots == (run_at,)
        assert plan.next_run_at is None
        rows = _row_plan(policy, due=run_at, now=later, trigger=DateTrigger(run_at))
        assert rows == {status: [run_at]}


@settings(max_examples=200, deadline=None)
@given(
    step=st.integers(min_value=1, max_value=7200),
    missed=st.integers(min_value=0, max_value=5000),
    keep=st.integers(min_value=1, max_value=20),
    extra=st.floats(min_value=0, max_value=0.999),
)
def test_latest_slots_matches_forward_enumeration(
    step: int, missed: int, keep: int, extra: float
) -> None:
    trigger = IntervalTrigger(step, T0)
    first = T0 + timedelta(seconds=step)
    now = first + timedelta(seconds=step * (missed + extra))
    everything = [first, *fire_times(trigger, first, min(missed, 999))]
    everything = [slot for slot in everything if slot <= now]
    if missed < 999:
        assert latest_slots(trigger, first, now, keep) == tuple(everything[-keep:])
    else:  # too many to enumerate here; check shape only
        found = latest_slots(trigger, first, now, keep)
        assert len(found) == keep
        assert all(
            later - earlier == timedelta(seconds=step)
            for earlier, later in itertools.pairwise(found)
        )
        assert found[-1] <= now < found[-1] + timedelta(seconds=step)


def test_latest_slots_works_for_cron_across_a_long_gap() -> None:
    trigger = CronTrigger("0 9 * * 1-5", "Europe/London")
    first = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # Monday 09:00 London (GMT)
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    found = latest_slots(trigger, first, now, 3)
    assert found == (
        datetime(2026, 2, 26, 9, 0, tzinfo=UTC),
        datetime(2026, 2, 27, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )


def _row(**values: object) -> ScheduledTask:
    defaults: dict[str, object] = {
        "id": 7,
        "name": "seeded",
        "task_type": TaskType.INTERVAL,
        "task_name": "t.record",
        "interval_seconds": 3600,
        "created_at": T0,
    }
    defaults.update(values)
    return ScheduledTask(**defaults)


def test_a_fresh_row_first_fires_one_interval_after_it_was_created() -> None:
    row = _row()
    advance = first_run_advance(row, IntervalTrigger(3600, T0), now=T0 + MINUTE, grace=GRACE)
    assert advance.next_run_at == T0 + timedelta(hours=1)
    assert advance.status is TaskStatus.ACTIVE


def test_an_old_row_without_next_run_at_is_scheduled_from_now_not_from_the_past() -> None:
    row = _row(interval_seconds=60)
    now = T0 + timedelta(days=3, seconds=30)
    advance = first_run_advance(row, IntervalTrigger(60, T0), now=now, grace=GRACE)
    # the slot 30 s ago is within the grace period: it is the first run, nothing older
    assert advance.next_run_at == now - timedelta(seconds=30)


def test_a_date_row_whose_run_at_is_long_past_completes_without_a_run() -> None:
    row = _row(task_type=TaskType.DATE, run_at=T0 + MINUTE, interval_seconds=None)
    advance = first_run_advance(
        row, DateTrigger(T0 + MINUTE), now=T0 + timedelta(hours=1), grace=GRACE
    )
    assert advance.next_run_at is None
    assert advance.status is TaskStatus.COMPLETED


def test_a_date_row_inserted_to_run_now_fires_once() -> None:
    # raw SQL: INSERT ... (task_type, run_at) VALUES ('date', now()): run_at == created_at
    row = _row(task_type=TaskType.DATE, run_at=T0, interval_seconds=None)
    advance = first_run_advance(row, DateTrigger(T0), now=T0 + timedelta(seconds=1), grace=GRACE)
    assert advance.next_run_at == T0
    assert advance.status is TaskStatus.ACTIVE


def test_a_date_row_created_after_its_run_at_within_the_grace_fires() -> None:
    row = _row(task_type=TaskType.DATE, run_at=T0 - timedelta(seconds=5), interval_seconds=None)
    advance = first_run_advance(
        row, DateTrigger(T0 - timedelta(seconds=5)), now=T0 + timedelta(seconds=1), grace=GRACE
    )
    assert advance.next_run_at == T0 - timedelta(seconds=5)


# ---------------------------------------------------------------- overlap policies


RUNNING = InFlight(runs=("run-going",))
UNSTARTED = InFlight(runs=("run-sent",), unstarted=True)


def test_skip_sends_past_a_run_going_and_holds_behind_one_not_started() -> None:
    due = T0 + MINUTE
    now = due + seconds_(1)
    # the worker's lock decides against a run going; one the broker still holds is waited for
    assert _row_plan(MisfirePolicy.RUN_ONCE, due=due, now=now, in_flight=RUNNING) == {
        ExecutionStatus.PENDING: [due]
    }
    assert _row_plan(MisfirePolicy.RUN_ONCE, due=due, now=now, in_flight=UNSTARTED) == {
        ExecutionStatus.QUEUED: [due]
    }


def test_buffer_one_queues_one_slot_behind_a_run_going_and_skips_a_further_one() -> None:
    due = T0 + MINUTE
    now = due + seconds_(1)
    first = _row_plan(
        MisfirePolicy.RUN_ONCE, due=due, now=now, overlap="buffer_one", in_flight=RUNNING
    )
    assert first == {ExecutionStatus.QUEUED: [due]}
    full = InFlight(waiting=1, runs=("run-going",))
    second = _row_plan(
        MisfirePolicy.RUN_ONCE, due=due, now=now, overlap="buffer_one", in_flight=full
    )
    assert second == {ExecutionStatus.SKIPPED: [due]}
    idle = _row_plan(
        MisfirePolicy.RUN_ONCE, due=due, now=now, overlap="buffer_one", in_flight=InFlight()
    )
    assert idle == {ExecutionStatus.PENDING: [due]}


def test_buffer_one_keeps_at_most_one_of_a_catch_up_backlog_waiting() -> None:
    due = T0 + MINUTE
    now = due + timedelta(minutes=4, seconds=30)  # five late slots, caught up
    idle = _row_plan(
        MisfirePolicy.CATCH_UP, due=due, now=now, overlap="buffer_one", in_flight=InFlight()
    )
    assert idle == {
        ExecutionStatus.PENDING: [due],
        ExecutionStatus.QUEUED: [due + MINUTE],
        ExecutionStatus.SKIPPED: [due + k * MINUTE for k in range(2, 5)],
    }
    busy = _row_plan(
        MisfirePolicy.CATCH_UP, due=due, now=now, overlap="buffer_one", in_flight=RUNNING
    )
    assert busy == {
        ExecutionStatus.QUEUED: [due],
        ExecutionStatus.SKIPPED: [due + k * MINUTE for k in range(1, 5)],
    }


def _plan_one(overlap: str, in_flight: InFlight, *, locks: bool = True) -> RowPlan:
    """The plan of a one-minute schedule due a second ago, its first slot at T0 + 1 min."""
    row = _due_row(MisfirePolicy.RUN_ONCE, overlap=overlap)
    row.next_run_at = T0 + MINUTE
    return plan_row(
        row,
        _every_minute(),
        now=T0 + MINUTE + seconds_(1),
        grace=GRACE,
        catch_up_max_runs=10,
        max_slots=1000,
        new_task_id=lambda: "new",
        in_flight=in_flight,
        locks=locks,
    )


def test_cancel_other_names_the_runs_going_and_holds_its_slot_until_they_end() -> None:
    due = T0 + MINUTE
    plan = _plan_one("cancel_other", InFlight(runs=("run-a", "run-b")))
    assert [(slot.scheduled_for, slot.status) for slot in plan.slots] == [
        (due, ExecutionStatus.QUEUED)
    ]
    assert plan.cancel == ("run-a", "run-b")
    assert plan.cancel_reason is not None
    assert "cancel_other" in plan.cancel_reason
    assert due.isoformat() in plan.cancel_reason
    # nothing going: nothing to cancel, the slot is sent
    idle = _plan_one("cancel_other", InFlight())
    assert [slot.status for slot in idle.slots] == [ExecutionStatus.PENDING]
    assert idle.cancel == ()


@pytest.mark.parametrize("overlap", ["buffer_one", "cancel_other"])
def test_a_task_that_takes_no_lock_overlaps_whatever_the_schedule_says(overlap: str) -> None:
    plan = _plan_one(overlap, InFlight(waiting=1, runs=("run-going",)), locks=False)
    assert [slot.status for slot in plan.slots] == [ExecutionStatus.PENDING]
    assert plan.cancel == ()
