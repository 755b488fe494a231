"""The slots a backfill covers (``core.backfill.backfill_slots``): the schedule's own
trigger over a half-open past range, with its window, grid and exclusions; a range
that is empty, reaches into the future or holds too many slots is refused naming
``end``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dataforge_scheduler.core.backfill import backfill_slots
from dataforge_scheduler.core.triggers import trigger_for
from dataforge_scheduler.errors import InvalidSchedule

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
LATER = MONDAY + timedelta(days=30)


@dataclass
class Row:
    task_type: str = "cron"
    cron_expression: str | None = "0 * * * *"
    interval_seconds: int | None = None
    run_at: datetime | None = None
    timezone: str | None = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    created_at: datetime | None = None
    exclusions: Any = None


def _slots(row: Row, start: datetime, end: datetime, *, limit: int = 1000) -> list[datetime]:
    return backfill_slots(trigger_for(row, "UTC"), start=start, end=end, now=LATER, limit=limit)


def test_the_range_includes_its_start_and_excludes_its_end() -> None:
    slots = _slots(Row(), MONDAY, MONDAY + timedelta(hours=3))
    assert slots == [MONDAY + timedelta(hours=h) for h in range(3)]
    inside = _slots(Row(), MONDAY + timedelta(seconds=1), MONDAY + timedelta(hours=3, seconds=1))
    assert inside == [MONDAY + timedelta(hours=h) for h in (1, 2, 3)]


def test_an_interval_backfill_stays_on_its_grid() -> None:
    row = Row(
        task_type="interval",
        cron_expression=None,
        interval_seconds=900,
        created_at=MONDAY + timedelta(minutes=5),
    )
    slots = _slots(row, MONDAY, MONDAY + timedelta(hours=1))
    assert slots == [MONDAY + timedelta(minutes=m) for m in (20, 35, 50)]


def test_the_schedules_window_and_exclusions_apply() -> None:
    row = Row(
        start_at=MONDAY + timedelta(hours=2),
        end_at=MONDAY + timedelta(hours=8),
        exclusions=[
            {
                "name": "maintenance",
                "start": "2026-03-02T04:00:00+00:00",
                "end": "2026-03-02T06:00:00+00:00",
            }
        ],
    )
    slots = _slots(row, MONDAY, MONDAY + timedelta(days=1))
    assert slots == [MONDAY + timedelta(hours=h) for h in (2, 3, 6, 7, 8)]


def test_a_one_shot_has_its_one_slot_in_range_and_none_outside() -> None:
    row = Row(task_type="date", cron_expression=None, run_at=MONDAY + timedelta(hours=5))
    assert _slots(row, MONDAY, MONDAY + timedelta(days=1)) == [MONDAY + timedelta(hours=5)]
    assert _slots(row, MONDAY, MONDAY + timedelta(hours=5)) == []


def test_the_limit_is_a_ceiling_never_a_cut() -> None:
    assert len(_slots(Row(), MONDAY, MONDAY + timedelta(hours=24), limit=24)) == 24
    with pytest.raises(InvalidSchedule, match="holds more than 23 slots") as caught:
        _slots(Row(), MONDAY, MONDAY + timedelta(hours=24), limit=23)
    assert caught.value.field == "end"


@pytest.mark.parametrize(
    ("start", "end", "field", "message"),
    [
        (MONDAY, MONDAY, "end", "must be after start"),
        (MONDAY, LATER + timedelta(seconds=1), "end", "is in the future"),
        (MONDAY.replace(tzinfo=None), MONDAY + timedelta(hours=1), "start", "timezone-aware"),
        (MONDAY, MONDAY.replace(year=9500), "end", "between the years"),
    ],
)
def test_a_bad_range_is_refused_naming_the_field(
    start: datetime, end: datetime, field: str, message: str
) -> None:
    with pytest.raises(InvalidSchedule, match=message) as caught:
        _slots(Row(), start, end)
    assert caught.value.field == field
