"""The slots of a pass: which slots a due schedule runs now (the misfire policies), when
it runs next, and the values a pass hands back (``Message``, ``PassResult``).

``plan_slots`` is the pure arithmetic (a trigger, the row's due time, now, the policy);
``plan_row`` applies it to one ``scheduled_tasks`` row and turns the result into the
execution rows to insert and the values to write back; ``plan_first_run`` gives a row
inserted without ``next_run_at`` its first fire. ``DatabaseScheduler`` calls them inside
its claim transaction. The policies (timelines in ``docs/scheduler.md``):

- on time (the due slot is no later than the grace period): every slot up to now runs;
- ``run_once``: one run, for the latest missed slot, then the next future slot;
- ``skip``: no run, then the next future slot;
- ``catch_up``: a run for each of the latest ``catch_up_max_runs`` missed slots, oldest
  first, then the next future slot.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dataforge_scheduler.core.clock import ensure_utc
from dataforge_scheduler.core.enums import ExecutionStatus, MisfirePolicy, TaskStatus, TaskType
from dataforge_scheduler.core.triggers import Trigger
from dataforge_scheduler.errors import InvalidSchedule
from dataforge_scheduler.sql.claims import Advance, ClaimedSlot, NewSlot
from dataforge_scheduler.sql.models import ScheduledTask

__all__ = [
    "Message",
    "PassResult",
    "RowPlan",
    "SlotPlan",
    "claimed_slot",
    "latest_slots",
    "plan_first_run",
    "plan_row",
    "plan_slots",
]

logger = logging.getLogger(__name__)

_FIRST_PROBE = timedelta(seconds=1)
_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True)
class Message:
    """How a slot is published: task name, kwargs, ``send_task`` options, headers.

    The Celery task id is not part of it: a slot is always sent with the id stored on
    its execution row, which is how the worker finds that row.
    """

    task_name: str
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassResult:
    """What one claim-and-send pass did.

    ``sent``: slots published (claimed by this pass, or found unsent and re-sent);
    ``unsent``: slots claimed but refused by the broker, left for a later pass;
    ``next_run_at``: the earliest ``next_run_at`` after the pass; ``batch_full``: the
    pass claimed a full batch of schedules, so more may already be due.
    """

    sent: tuple[ClaimedSlot, ...] = ()
    unsent: tuple[ClaimedSlot, ...] = ()
    claimed_schedules: int = 0
    next_run_at: datetime | None = None
    batch_full: bool = False


@dataclass(frozen=True)
class SlotPlan:
    """The slots to run now (oldest first), the next fire (None: never again), and
    whether the due slot was a misfire (later than the grace period)."""

    slots: tuple[datetime, ...]
    next_run_at: datetime | None
    late: bool


def latest_slots(
    trigger: Trigger, first: datetime, now: datetime, keep: int
) -> tuple[datetime, ...]:
    """The last ``keep`` slots in ``[first, now]``, oldest first; ``first`` is a slot.

    Looks back from ``now`` over a window that doubles until it holds ``keep`` slots or
    reaches ``first``, so a long downtime costs about ``keep`` trigger steps, not one
    per missed slot.
    """
    width = _FIRST_PROBE
    while True:
        start = max(first, now - width)
        found: deque[datetime] = deque(maxlen=max(keep, 1))
        if start == first:
            found.append(first)
        cursor = trigger.next_after(start)
        while cursor is not None and cursor <= now:
            found.append(cursor)
            cursor = trigger.next_after(cursor)
        if len(found) >= keep or start == first:
            return tuple(found)
        width *= 2


def plan_slots(
    trigger: Trigger,
    due: datetime,
    now: datetime,
    *,
    policy: MisfirePolicy,
    grace: timedelta,
    catch_up_max_runs: int,
    max_slots: int,
) -> SlotPlan:
    """The slots a schedule due at ``due`` runs at ``now`` (see the module docstring).

    On time, at most ``max_slots`` slots are taken; ``next_run_at`` is then the first slot
    not taken, which may still be due (the next pass takes it).
    """
    if due >= now - grace:
        slots: list[datetime] = []
        cursor: datetime | None = due
        while cursor is not None and cursor <= now and len(slots) < max_slots:
            slots.append(cursor)
            cursor = trigger.next_after(cursor)
        return SlotPlan(tuple(slots), cursor, late=False)
    following = trigger.next_after(now)
    if policy is MisfirePolicy.SKIP:
        return SlotPlan((), following, late=True)
    keep = 1 if policy is MisfirePolicy.RUN_ONCE else catch_up_max_runs
    return SlotPlan(latest_slots(trigger, due, now, keep), following, late=True)


@dataclass(frozen=True)
class RowPlan:
    """What a pass does with one due row: the execution rows to insert and what to
    write back (``advance``)."""

    row: ScheduledTask
    slots: list[NewSlot]
    next_run_at: datetime | None
    status: TaskStatus

    def advance(self, inserted: Mapping[str, int]) -> Advance:
        """The row's write-back; a slot recorded as failed (unregistered task) becomes
        the row's ``last_status`` and ``last_execution_id``."""
        failed = [
            inserted[slot.celery_task_id]
            for slot in self.slots
            if slot.status is ExecutionStatus.FAILED and slot.celery_task_id in inserted
        ]
        return Advance(
            schedule_id=self.row.id,
            next_run_at=self.next_run_at,
            status=self.status,
            last_status=ExecutionStatus.FAILED if failed else None,
            last_execution_id=max(failed) if failed else None,
        )


def _outside_window(row: ScheduledTask, due: datetime) -> bool:
    start_at = None if row.start_at is None else ensure_utc(row.start_at)
    end_at = None if row.end_at is None else ensure_utc(row.end_at)
    return (start_at is not None and due < start_at) or (end_at is not None and due > end_at)


def plan_row(
    row: ScheduledTask,
    trigger: Trigger,
    *,
    now: datetime,
    grace: timedelta,
    catch_up_max_runs: int,
    max_slots: int,
    new_task_id: Callable[[], str],
    unregistered_error: str | None = None,
) -> RowPlan:
    """Plan one due row. With ``unregistered_error`` its slots are recorded as failed
    runs carrying that error instead of ``pending`` ones to send. ``InvalidSchedule``
    when the row can never be sent (``handler_kwargs`` not a JSON object: raw SQL)."""
    stored = row.handler_kwargs if row.handler_kwargs is not None else {}
    if not isinstance(stored, dict):
        raise InvalidSchedule(
            f"handler_kwargs must be a JSON object, got {type(stored).__name__} {stored!r:.80}",
            field="handler_kwargs",
            value=stored,
        )
    due = ensure_utc(row.next_run_at) if row.next_run_at is not None else now
    if _outside_window(row, due):
        # next_run_at was written outside start_at/end_at (raw SQL): never fire it
        following = trigger.next_after(now)
        status = TaskStatus.ACTIVE if following is not None else TaskStatus.COMPLETED
        return RowPlan(row, [], following, status)
    policy = MisfirePolicy(row.misfire_policy)
    plan = plan_slots(
        trigger,
        due,
        now,
        policy=policy,
        grace=grace,
        catch_up_max_runs=catch_up_max_runs,
        max_slots=max_slots,
    )
    if plan.late:
        logger.warning(
            "schedule %s (id %s) is %.0f s late (grace %.0f s): misfire policy %s runs "
            "%d slot(s) now, next at %s",
            row.name,
            row.id,
            (now - due).total_seconds(),
            grace.total_seconds(),
            policy.value,
            len(plan.slots),
            plan.next_run_at,
        )
    kwargs = {**stored, "scheduled_task_id": row.id}
    slot_status = ExecutionStatus.PENDING if unregistered_error is None else ExecutionStatus.FAILED
    slots = [
        NewSlot(
            scheduled_task_id=row.id,
            scheduled_for=slot,
            task_name=row.task_name,
            celery_task_id=new_task_id(),
            kwargs=kwargs,
            status=slot_status,
            error=unregistered_error,
        )
        for slot in plan.slots
    ]
    if plan.next_run_at is None:
        logger.info("schedule %s (id %s) fired its last slot: completed", row.name, row.id)
        return RowPlan(row, slots, None, TaskStatus.COMPLETED)
    return RowPlan(row, slots, plan.next_run_at, TaskStatus.ACTIVE)


def plan_first_run(
    row: ScheduledTask, trigger: Trigger, *, now: datetime, grace: timedelta
) -> Advance:
    """The first ``next_run_at`` of a row inserted without one (the seed's raw INSERT).

    The row is scheduled from when the scheduler first sees it: its first slot after
    ``max(created_at, now - grace)``. Nothing from before that runs, so a row switched
    back on by raw SQL does not burst; a slot within the grace period still fires. A
    ``date`` row is searched from ``now - grace`` alone: its one slot may be its own
    creation instant (``run_at = now()`` in the INSERT), which must fire.
    """
    created = ensure_utc(row.created_at) if row.created_at is not None else now
    # a date row's run_at exactly ``grace`` ago is still on time, as in plan_slots
    date = row.task_type == TaskType.DATE
    start = now - grace - _INSTANT if date else max(created, now - grace)
    following = trigger.next_after(start)
    if following is None:
        logger.warning(
            "schedule %s (id %s) has no slot after %s: marked completed without running",
            row.name,
            row.id,
            start,
        )
        return Advance(row.id, None, TaskStatus.COMPLETED)
    return Advance(row.id, following, TaskStatus.ACTIVE)


def claimed_slot(row: ScheduledTask, slot: NewSlot, execution_id: int) -> ClaimedSlot:
    """The slot to send once ``slot``'s execution row exists as ``execution_id``."""
    return ClaimedSlot(
        execution_id=execution_id,
        celery_task_id=slot.celery_task_id,
        scheduled_task_id=row.id,
        schedule_name=row.name,
        task_name=slot.task_name,
        scheduled_for=slot.scheduled_for,
        kwargs=slot.kwargs,
        queue=row.queue,
        priority=row.priority,
        expire_seconds=row.expire_seconds,
    )
