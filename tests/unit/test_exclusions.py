"""Exclusion windows (``core.exclusions``): ranges, date lists and recurring windows in
the schedule's zone, read off the trigger a row describes; a slot inside a window is no
slot, whole windows are jumped at once, and a window that cannot be read is refused
naming it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dataforge_scheduler.core.exclusions import (
    MAX_JUMPS,
    ExcludingTrigger,
    clean_exclusions,
    parse_exclusions,
)
from dataforge_scheduler.core.triggers import CronTrigger, fire_times, trigger_for
from dataforge_scheduler.errors import InvalidSchedule

SHANGHAI = ZoneInfo("Asia/Shanghai")
FRIDAY = datetime(2026, 12, 4, 0, 0, tzinfo=SHANGHAI)  # a Friday


@dataclass
class Row:
    task_type: str = "cron"
    cron_expression: str | None = "0 9 * * *"
    interval_seconds: int | None = None
    run_at: datetime | None = None
    timezone: str | None = "Asia/Shanghai"
    start_at: datetime | None = None
    end_at: datetime | None = None
    created_at: datetime | None = None
    exclusions: Any = None


def _local(times: list[datetime]) -> list[str]:
    return [t.astimezone(SHANGHAI).strftime("%a %m-%d %H:%M") for t in times]


def test_a_recurring_window_keeps_weekends_out_in_the_zone() -> None:
    weekends = [{"name": "weekends", "cron": "0 0 * * 6", "duration_seconds": 2 * 86400}]
    trigger = trigger_for(Row(exclusions=weekends), "UTC")

    assert isinstance(trigger, ExcludingTrigger)
    assert _local(fire_times(trigger, FRIDAY, 4)) == [
        "Fri 12-04 09:00",
        "Mon 12-07 09:00",
        "Tue 12-08 09:00",
        "Wed 12-09 09:00",
    ]
    covered = trigger.excluded_by(datetime(2026, 12, 6, 23, 59, tzinfo=SHANGHAI))
    assert covered is not None
    assert covered[0].name == "weekends"
    assert covered[1] == datetime(2026, 12, 7, 0, 0, tzinfo=SHANGHAI)
    assert trigger.excluded_by(datetime(2026, 12, 7, 0, 0, tzinfo=SHANGHAI)) is None


def test_a_range_is_read_as_wall_times_in_the_zone_end_excluded() -> None:
    christmas = [{"start": "2026-12-24T00:00", "end": "2026-12-27T09:00"}]
    trigger = trigger_for(Row(exclusions=christmas), "UTC")
    fires = fire_times(trigger, datetime(2026, 12, 23, 0, 0, tzinfo=SHANGHAI), 2)
    assert _local(fires) == ["Wed 12-23 09:00", "Sun 12-27 09:00"], "end is not in the window"
    offset = [{"start": "2026-12-24T00:00+00:00", "end": "2026-12-25T00:00+00:00"}]
    utc_window = trigger_for(Row(exclusions=offset), "UTC")
    # 09:00 Shanghai on the 24th is 01:00 UTC: inside the UTC day given
    assert _local(fire_times(utc_window, datetime(2026, 12, 24, tzinfo=SHANGHAI), 1)) == [
        "Fri 12-25 09:00"
    ]


def test_a_date_list_keeps_whole_days_out_and_names_its_window() -> None:
    holidays = [{"name": "national day", "dates": ["2026-10-01", "2026-10-02"]}]
    trigger = trigger_for(Row(exclusions=holidays), "UTC")
    start = datetime(2026, 9, 30, 12, 0, tzinfo=SHANGHAI)
    assert _local(fire_times(trigger, start, 1)) == ["Sat 10-03 09:00"]
    assert isinstance(trigger, ExcludingTrigger)
    names = {w.name for w in trigger.windows}
    assert names == {"national day"}


def test_windows_are_jumped_not_walked() -> None:
    calls = 0

    class Minutely:
        inner = CronTrigger("* * * * *", SHANGHAI)

        def next_after(self, instant: datetime) -> datetime | None:
            nonlocal calls
            calls += 1
            return self.inner.next_after(instant)

    weekends = parse_exclusions([{"cron": "0 0 * * 6", "duration_seconds": 2 * 86400}], SHANGHAI)
    trigger = ExcludingTrigger(Minutely(), weekends)
    fire = trigger.next_after(datetime(2026, 12, 5, 1, 0, tzinfo=SHANGHAI))  # a Saturday
    assert fire == datetime(2026, 12, 7, 0, 0, tzinfo=SHANGHAI)
    assert calls <= 3, "one step into the window, one past it"


def test_windows_that_leave_no_slot_are_refused() -> None:
    always = [{"cron": "* * * * *", "duration_seconds": 120}]
    trigger = trigger_for(Row(exclusions=always), "UTC")
    with pytest.raises(InvalidSchedule, match=f"cover every slot in {MAX_JUMPS} windows") as exc:
        trigger.next_after(FRIDAY)
    assert exc.value.field == "exclusions"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"start": "x"}, "must be a list of windows"),
        (["weekends"], "exclusions[0]: a window must be an object"),
        ([{"start": "2026-12-24T00:00"}], "exclusions[0]: a window has start and end"),
        ([{}, {"start": "a", "end": "b"}], "exclusions[0]: a window has"),
        ([{"start": "2026-12-24", "end": "soon"}], "exclusions[0]: end is not an ISO 8601"),
        ([{"start": "2026-12-24T00:00", "end": "2026-12-23T00:00"}], "end must be after"),
        ([{"start": 5, "end": "2026-12-23T00:00"}], "start must be an ISO 8601"),
        ([{"dates": []}], "dates must list 1 to 366 dates"),
        ([{"dates": ["2026-02-30"]}], "'2026-02-30' is not an ISO date"),
        ([{"cron": "61 * * * *", "duration_seconds": 60}], "exclusions[0]: cron:"),
        ([{"cron": "0 0 * * 6", "duration_seconds": 0}], "duration_seconds must be"),
        ([{"cron": "0 0 * * 6", "duration_seconds": True}], "duration_seconds must be"),
        ([{"cron": "0 0 * * 6", "duration_seconds": 10**9}], "at most a year"),
        ([{"name": "", "dates": ["2026-01-01"]}], "name must be 1 to 64"),
        ([{"dates": ["2026-01-01"]}] * 51, "at most 50 windows"),
    ],
)
def test_a_window_that_cannot_be_read_is_refused_naming_it(value: Any, message: str) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        clean_exclusions(value, "UTC")
    assert refused.value.field == "exclusions"
    assert message in refused.value.message


def test_no_windows_is_stored_as_none_and_a_row_without_them_is_not_wrapped() -> None:
    assert clean_exclusions([], "UTC") is None
    assert clean_exclusions(None, "UTC") is None
    assert not isinstance(trigger_for(Row(), "UTC"), ExcludingTrigger)
    kept = clean_exclusions([{"name": "x", "dates": ["2026-01-01"]}], "UTC")
    assert kept == [{"name": "x", "dates": ["2026-01-01"]}]


def test_every_beat_reads_the_same_windows_so_the_slots_agree() -> None:
    windows = [
        {"name": "lunch", "cron": "0 12 * * *", "duration_seconds": 3600},
        {"name": "freeze", "start": "2026-12-10T00:00", "end": "2026-12-11T00:00"},
    ]
    row = Row(
        task_type="interval",
        cron_expression=None,
        interval_seconds=1800,
        created_at=FRIDAY.astimezone(UTC),
        exclusions=windows,
    )
    first = fire_times(trigger_for(row, "UTC"), FRIDAY, 200)
    second = fire_times(trigger_for(row, "UTC"), FRIDAY, 200)
    assert first == second
    assert all(not (12 <= t.astimezone(SHANGHAI).hour < 13) for t in first)
    assert all(t.astimezone(SHANGHAI).day != 10 for t in first)
    assert len(first) == 200
    assert first[0] - FRIDAY == timedelta(minutes=30)


def test_a_wall_time_in_a_spring_forward_gap_opens_where_cron_fires() -> None:
    new_york = ZoneInfo("America/New_York")
    gap = [{"start": "2026-03-08T02:30", "end": "2026-03-08T04:00"}]
    (window,) = parse_exclusions(gap, new_york)
    assert window.start == datetime(2026, 3, 8, 3, 0, tzinfo=new_york)  # 02:30 does not exist
    row = Row(cron_expression="30 2 * * *", timezone="America/New_York", exclusions=gap)
    fires = fire_times(trigger_for(row, "UTC"), datetime(2026, 3, 7, 12, tzinfo=UTC), 1)
    assert fires[0].astimezone(new_york).day == 9, "the 03:00 EDT fire of 02:30 is excluded"


def test_dates_and_times_outside_the_calendar_are_refused_not_overflowed() -> None:
    for value in (
        [{"dates": ["9999-12-31"]}],
        [{"start": "0001-01-01T00:00", "end": "2026-01-01"}],
    ):
        with pytest.raises(InvalidSchedule, match="outside the years 1900 to 9000"):
            clean_exclusions(value, "Asia/Shanghai")
