"""The library's rules about time, in one place: naive datetimes, first fires, slots and
misfires. Pure: no database, no Celery; every instant in and out is aware UTC.

**The naive-datetime rule.** A datetime a caller gives the library (a schedule field, an
API body, a ``now`` argument, a clock's start) must be timezone-aware: a naive value
names no instant, so it is refused with ``InvalidSchedule`` naming the field (also a
``ValueError``), never guessed (``aware_utc``). The one exception is a value read back
from storage that keeps no offset (SQLite's ``DateTime(timezone=True)`` columns): the
library only ever writes UTC, so such a value is read as UTC (``stored_utc``). Every
other module calls one of these two; nothing else decides.

**First fires.** A configuration change (create, update, resume) fires next at the
trigger's first fire strictly after now (``next_run_after_change``); a row inserted by raw SQL
without ``next_run_at`` is scheduled from when a scheduler first sees it
(``first_fire``). A ``date`` schedule whose ``run_at`` has passed is refused
(``refuse_past_run_at``).

**Slots and misfires.** ``plan_slots`` turns a due time, now and a misfire policy into
the slots to run now and the next fire:

- on time (the due slot is no later than the grace): every slot up to now;
- late (a misfire): the latest ``catch_up_max_runs`` slots, then the next future slot.
  ``run_once`` runs the newest of them, ``skip`` none, ``catch_up`` all, oldest first;
  the others are recorded ``missed`` with the reason.

Slots of one schedule planned together never race each other for its lock
(``core.backlog``): unless its overlap policy is ``allow``, ``catch_up`` sends the oldest
and holds the rest, to be sent one after another, and the other policies run the newest
and record the older ones ``missed``.

``plan_row`` applies that to one schedule row (any object with the ``PlannableRow``
attributes) and returns the execution rows to insert and the values to write back
(``core.slots``); ``first_run_advance`` does the same for a row with no ``next_run_at``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.core.backlog import (
    Backlog,
    InFlight,
    apply_overlap,
    late_reason,
    split_backlog,
)
from dataforge_scheduler.core.enums import (
    ExecutionStatus,
    MisfirePolicy,
    OverlapPolicy,
    TaskStatus,
    TaskType,
)
from dataforge_scheduler.core.slots import (
    Advance,
    NewSlot,
    PlannableRow,
    RowPlan,
    within_max_runs,
)
from dataforge_scheduler.errors import InvalidParams, InvalidSchedule

if TYPE_CHECKING:
    from dataforge_scheduler.core.triggers import Trigger

__all__ = [
    "MAX_YEAR",
    "MIN_YEAR",
    "SlotPlan",
    "aware_utc",
    "first_fire",
    "first_run_advance",
    "latest_slots",
    "misfire_grace",
    "next_run_after_change",
    "plan_row",
    "plan_slots",
    "refuse_past_run_at",
    "stored_utc",
    "within_calendar",
]

logger = logging.getLogger(__name__)

#: Instants the library accepts from callers lie between these years, so trigger
#: arithmetic (a grid step, a year-long cron search) can never leave the calendar.
MIN_YEAR, MAX_YEAR = 1900, 9000

_FIRST_PROBE = timedelta(seconds=1)
_INSTANT = timedelta(microseconds=1)


# ---------------------------------------------------------------- the naive-datetime rule


def aware_utc(value: object, *, field: str = "instant") -> datetime:
    """``value`` as aware UTC; ``InvalidSchedule`` naming ``field`` when it is not a
    datetime or is naive (see the module docstring)."""
    if not isinstance(value, datetime):
        raise InvalidSchedule(
            f"{field} must be a datetime, got {value!r}", field=field, value=value
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidSchedule(
            f"{field} must be timezone-aware, got naive {value.isoformat()}",
            field=field,
            value=value,
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidSchedule(f"{field} is out of range", field=field, value=value) from None


def stored_utc(value: datetime) -> datetime:
    """A datetime read back from storage as aware UTC: naive means UTC (SQLite keeps no
    offset, and the library only writes UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def within_calendar(value: object, *, field: str = "instant") -> datetime:
    """``aware_utc(value)`` that also lies between ``MIN_YEAR`` and ``MAX_YEAR``."""
    utc = aware_utc(value, field=field)
    if not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise InvalidSchedule(
            f"{field} must fall between the years {MIN_YEAR} and {MAX_YEAR}",
            field=field,
            value=value,
        )
    return utc


# ---------------------------------------------------------------- first fires


def next_run_after_change(
    trigger: Trigger, *, status: TaskStatus | str, now: datetime
) -> datetime | None:
    """Where ``next_run_at`` goes after a configuration change: the first fire strictly
    after ``now``, or None unless the schedule is active."""
    if TaskStatus(status) is not TaskStatus.ACTIVE:
        return None
    return trigger.next_after(aware_utc(now, field="now"))


def refuse_past_run_at(
    task_type: TaskType | str, run_at: datetime | None, *, now: datetime
) -> None:
    """``InvalidSchedule`` for a ``date`` schedule whose ``run_at`` is not in the future."""
    if TaskType(task_type) is not TaskType.DATE or run_at is None:
        return
    at = stored_utc(run_at)
    if at <= now:
        raise InvalidSchedule(
            f"run_at {at.isoformat()} is not in the future (now is {now.isoformat()}): "
            "a date schedule would never fire",
            field="run_at",
            value=run_at,
        )


def first_fire(
    trigger: Trigger,
    *,
    task_type: TaskType | str,
    created_at: datetime | None,
    now: datetime,
    grace: timedelta,
) -> datetime | None:
    """The first ``next_run_at`` of a row inserted without one (raw SQL).

    The row is scheduled from when a scheduler first sees it: its first fire after
    ``max(created_at, now - grace)``. Nothing from before that runs, so a row switched
    back on by raw SQL does not burst; a slot within the grace still fires. A ``date``
    row is searched from ``now - grace`` alone: its one slot may be its own creation
    instant (``run_at = now()`` in the INSERT), which must fire.
    """
    created = stored_utc(created_at) if created_at is not None else now
    if TaskType(task_type) is TaskType.DATE:
        # a run_at exactly ``grace`` ago is still on time, as in plan_slots
        start = now - grace - _INSTANT
    else:
        start = max(created, now - grace)
    return trigger.next_after(start)


def misfire_grace(row_seconds: int | None, default_seconds: int) -> timedelta:
    """A schedule's misfire grace: its own seconds, else the setting's."""
    return timedelta(seconds=default_seconds if row_seconds is None else row_seconds)


# ---------------------------------------------------------------- slots


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
    """The slots a schedule due at ``due`` has at ``now``, and its next fire.

    On time, at most ``max_slots`` slots are taken; ``next_run_at`` is then the first slot
    not taken, which may still be due (the next pass takes it). Late (a misfire), the
    latest ``catch_up_max_runs`` slots, whatever the policy: ``plan_row`` records each as
    run or ``missed``. ``policy`` is the row's misfire policy (kept for callers; the
    window does not depend on it).
    """
    if due >= now - grace:
        slots: list[datetime] = []
        cursor: datetime | None = due
        while cursor is not None and cursor <= now and len(slots) < max_slots:
            slots.append(cursor)
            cursor = trigger.next_after(cursor)
        return SlotPlan(tuple(slots), cursor, late=False)
    # late: the latest catch_up_max_runs slots, which every policy records (plan_row)
    following = trigger.next_after(now)
    keep = max(1, catch_up_max_runs)
    return SlotPlan(latest_slots(trigger, due, now, keep), following, late=True)


def _outside_window(row: PlannableRow, due: datetime) -> bool:
    start_at = None if row.start_at is None else stored_utc(row.start_at)
    end_at = None if row.end_at is None else stored_utc(row.end_at)
    return (start_at is not None and due < start_at) or (end_at is not None and due > end_at)


def _stored_kwargs(row: PlannableRow) -> dict[str, Any]:
    stored = row.handler_kwargs if row.handler_kwargs is not None else {}
    if not isinstance(stored, dict):
        raise InvalidSchedule(
            f"handler_kwargs must be a JSON object, got {type(stored).__name__} {stored!r:.80}",
            field="handler_kwargs",
            value=stored,
        )
    return stored


def plan_row(
    row: PlannableRow,
    trigger: Trigger,
    *,
    now: datetime,
    grace: timedelta,
    catch_up_max_runs: int,
    max_slots: int,
    new_task_id: Callable[[], str],
    unregistered_error: str | None = None,
    check_kwargs: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    in_flight: InFlight | None = None,
    locks: bool = True,
) -> RowPlan:
    """Plan one due row. With ``unregistered_error`` its slots are recorded as failed
    runs carrying that error instead of ``pending`` ones to send. ``check_kwargs`` (the
    task's registered params) returns the kwargs to send, coerced, or raises
    ``InvalidParams``: the slots are then recorded as failed runs naming the bad field.
    ``InvalidSchedule`` when the row can never be sent (``handler_kwargs`` not a JSON
    object: raw SQL). ``in_flight``: what the schedule has going (``queued`` slots,
    runs not finished), which its overlap policy weighs (``core.backlog.apply_overlap``):
    the plan may hold its slots, record them ``skipped``, or name runs to cancel.
    ``locks`` False: its task takes no lock (not a DataForgeTask, or its class allows
    overlap), so it is planned as under overlap policy ``allow``."""
    stored = _stored_kwargs(row)
    if check_kwargs is not None and unregistered_error is None:
        try:
            stored = check_kwargs(stored)
        except InvalidParams as exc:
            unregistered_error = f"handler_kwargs do not match the task's params: {exc}"
    due = stored_utc(row.next_run_at) if row.next_run_at is not None else now
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
    backlog = _backlog(
        row,
        plan,
        policy=policy,
        late_seconds=(now - due).total_seconds(),
        grace=grace,
        locks=locks,
    )
    cancel: tuple[str, ...] = ()
    cancel_reason = None
    if unregistered_error is not None:  # nothing is sent: every slot is recorded failed
        backlog = Backlog(send=list(plan.slots))
    else:
        overlap = apply_overlap(
            backlog,
            policy=OverlapPolicy(row.overlap_policy) if locks else OverlapPolicy.ALLOW,
            in_flight=in_flight or InFlight(),
        )
        backlog, cancel, cancel_reason = overlap.backlog, overlap.cancel, overlap.cancel_reason
    if plan.late:
        logger.warning(
            "schedule %s (id %s) is %.0f s late (grace %.0f s): misfire policy %s runs "
            "%d slot(s), records %d as missed, next at %s",
            row.name,
            row.id,
            (now - due).total_seconds(),
            grace.total_seconds(),
            policy.value,
            len(backlog.send) + len(backlog.held),
            len(backlog.missed),
            plan.next_run_at,
        )
    kwargs = {**stored, "scheduled_task_id": row.id}
    slot_status = ExecutionStatus.PENDING if unregistered_error is None else ExecutionStatus.FAILED

    def slot_row(at: datetime, status: ExecutionStatus, error: str | None) -> NewSlot:
        return NewSlot(
            scheduled_task_id=row.id,
            scheduled_for=at,
            task_name=row.task_name,
            celery_task_id=new_task_id(),
            kwargs=kwargs,
            status=status,
            error=error,
        )

    slots = sorted(
        [
            *(slot_row(at, slot_status, unregistered_error) for at in backlog.send),
            *(slot_row(at, ExecutionStatus.QUEUED, None) for at in backlog.held),
            *(slot_row(at, ExecutionStatus.MISSED, reason) for at, reason in backlog.missed),
            *(slot_row(at, ExecutionStatus.SKIPPED, why) for at, why in backlog.skipped),
        ],
        key=lambda slot: slot.scheduled_for,
    )
    if backlog.skipped:
        logger.info(
            "schedule %s (id %s): %d slot(s) skipped, a run is still going (overlap policy %s)",
            row.name,
            row.id,
            len(backlog.skipped),
            row.overlap_policy,
        )
    next_run_at = plan.next_run_at
    slots, limited = within_max_runs(slots, row.max_runs)
    limited_runs = 0
    if limited:
        limited_runs = max(row.max_runs or 0, 0)
        next_run_at = None
        logger.info(
            "schedule %s (id %s) claimed its last run (max_runs): completed", row.name, row.id
        )
    elif next_run_at is None:
        logger.info("schedule %s (id %s) fired its last slot: completed", row.name, row.id)
    status = TaskStatus.COMPLETED if next_run_at is None else TaskStatus.ACTIVE
    return RowPlan(
        row,
        slots,
        next_run_at,
        status,
        cancel=cancel,
        cancel_reason=cancel_reason,
        limited_runs=limited_runs,
        unlimited_next=plan.next_run_at if limited else None,
    )


def _backlog(
    row: PlannableRow,
    plan: SlotPlan,
    *,
    policy: MisfirePolicy,
    late_seconds: float,
    grace: timedelta,
    locks: bool,
) -> Backlog[datetime]:
    """Which of a row's planned slots are sent, held or ``missed`` (``core.backlog``):
    late, ``skip`` runs none and ``run_once`` only the newest whatever the overlap
    policy; otherwise (on time, or late ``catch_up``) a backlog never races itself."""
    times = list(plan.slots)
    if plan.late and policy is not MisfirePolicy.CATCH_UP:
        reason = late_reason(late_seconds, grace.total_seconds(), policy)
        run = times[-1:] if policy is MisfirePolicy.RUN_ONCE else []
        return Backlog(send=run, missed=[(at, reason) for at in times[: len(times) - len(run)]])
    overlap = OverlapPolicy(row.overlap_policy) if locks else OverlapPolicy.ALLOW
    return split_backlog(times, when=times, misfire=policy, overlap=overlap)


def first_run_advance(
    row: PlannableRow, trigger: Trigger, *, now: datetime, grace: timedelta
) -> Advance:
    """The write-back giving a row inserted without ``next_run_at`` its first fire
    (``first_fire``), or ``completed`` when it has none left."""
    following = first_fire(
        trigger, task_type=row.task_type, created_at=row.created_at, now=now, grace=grace
    )
    if following is None:
        logger.warning(
            "schedule %s (id %s) has no slot left: marked completed without running",
            row.name,
            row.id,
        )
        return Advance(row.id, None, TaskStatus.COMPLETED)
    return Advance(row.id, following, TaskStatus.ACTIVE)
