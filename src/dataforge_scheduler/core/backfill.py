"""The slots a backfill covers: what a schedule's own trigger fires in a past range.
Pure: no database, no Celery.

A backfill asks for the runs a schedule would have had between ``start`` and ``end``
(the schedule was paused, created later, or its task was broken then). The slots come
from the schedule's trigger (``core.triggers.trigger_for``), so they follow exactly the
rules its scheduler follows: cron read in the schedule's zone with its DST rules, the
interval grid, ``start_at``/``end_at`` and the exclusion windows. The range is
half-open, ``start <= slot < end``, and must lie in the past: the slots from now on are
the scheduler's to run. A range holding more than ``limit`` slots is refused whole,
never cut short silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.timing import aware_utc, within_calendar
from dataforge_scheduler.core.triggers import Trigger
from dataforge_scheduler.errors import InvalidSchedule

__all__ = ["BackfillSlot", "backfill_slots"]

_MICROSECOND = timedelta(microseconds=1)


def backfill_slots(
    trigger: Trigger, *, start: datetime, end: datetime, now: datetime, limit: int
) -> list[datetime]:
    """The fires of ``trigger`` with ``start <= slot < end``, oldest first.

    ``InvalidSchedule`` names the field: ``end`` not after ``start``, ``end`` later
    than ``now``, or more than ``limit`` slots in the range (the setting
    ``backfill_max_slots``; backfill a shorter range).
    """
    start = within_calendar(start, field="start")
    end, now = within_calendar(end, field="end"), aware_utc(now)
    if end <= start:
        raise InvalidSchedule(
            f"end ({end.isoformat()}) must be after start ({start.isoformat()})",
            field="end",
            value=end,
        )
    if end > now:
        raise InvalidSchedule(
            f"end ({end.isoformat()}) is in the future (now {now.isoformat()}): a backfill "
            "covers past slots only; the scheduler runs the ones to come",
            field="end",
            value=end,
        )
    slots: list[datetime] = []
    fire = trigger.next_after(start - _MICROSECOND)
    while fire is not None and fire < end:
        if len(slots) == limit:
            raise InvalidSchedule(
                f"the range from {start.isoformat()} to {end.isoformat()} holds more than "
                f"{limit} slots (backfill_max_slots); backfill a shorter range",
                field="end",
                value=end,
            )
        slots.append(fire)
        fire = trigger.next_after(fire)
    return slots


@dataclass(frozen=True)
class BackfillSlot:
    """One slot of a backfill: its time, and its execution row (id and status) when it
    has one (a dry run's new slots have none)."""

    scheduled_for: datetime
    execution_id: int | None = None
    status: ExecutionStatus | None = None
