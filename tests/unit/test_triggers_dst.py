"""Cron triggers across DST transitions: explicit nights in several zones.

Gap rule: a wall time skipped by a forward jump fires once, at the first instant after the
gap, and every skipped wall time of one gap shares that fire. Overlap rule: a repeated wall
time fires once, at its first occurrence (fold=0).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dataforge_scheduler.core.triggers import CronTrigger, fire_times

NEW_YORK = "America/New_York"
LONDON = "Europe/London"
LORD_HOWE = "Australia/Lord_Howe"
SHANGHAI = "Asia/Shanghai"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(zone: str, *fields: int, fold: int = 0) -> datetime:
    """A wall time in ``zone``; compare it through ``.astimezone(UTC)`` (PEP 495: an
    inter-zone ``==`` is always false for a fold-dependent time)."""
    year, month, day, hour, minute = (*fields, 0, 0)[:5]
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold)


def fires_between(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    fires = fire_times(CronTrigger(expression, zone), start, 500)
    assert fires[-1] > end, "widen the count: the window was not covered"
    return [f for f in fires if f <= end]


# ---------------------------------------------------------------- New York, 2024


def test_new_york_spring_forward_skipped_time_fires_at_gap_end() -> None:
    # 2024-03-10 02:00 EST jumps to 03:00 EDT (07:00 UTC)
    fires = fire_times(CronTrigger("30 2 * * *", NEW_YORK), utc(2024, 3, 9, 12), 3)
    assert fires == [utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30), utc(2024, 3, 12, 6, 30)]
    assert fires[0] == local(NEW_YORK, 2024, 3, 10, 3).astimezone(UTC)


def test_new_york_spring_forward_gap_times_collapse_into_one_fire() -> None:
    fires = fires_between("*/15 2 * * *", NEW_YORK, utc(2024, 3, 9, 12), utc(2024, 3, 11, 5))
    assert fires == [utc(2024, 3, 10, 7)]
    next_day = fire_times(CronTrigger("*/15 2 * * *", NEW_YORK), utc(2024, 3, 10, 7), 4)
    assert next_day == [utc(2024, 3, 11, 6, m) for m in (0, 15, 30, 45)]


def test_new_york_spring_forward_gap_fire_and_real_time_after_gap_fire_once() -> None:
    fires = fires_between("*/30 2-3 * * *", NEW_YORK, utc(2024, 3, 10, 5), utc(2024, 3, 10, 9))
    # 02:00 and 02:30 are skipped and collapse onto 03:00 EDT, which also matches itself
    assert fires == [utc(2024, 3, 10, 7), utc(2024, 3, 10, 7, 30)]


def test_new_york_spring_forward_from_inside_the_night() -> None:
    trigger = CronTrigger("30 2 * * *", NEW_YORK)
    just_before = utc(2024, 3, 10, 7) - timedelta(microseconds=1)  # 01:59:59.999999 EST
    assert trigger.next_after(just_before) == utc(2024, 3, 10, 7)
    assert trigger.next_after(utc(2024, 3, 10, 7)) == utc(2024, 3, 11, 6, 30)


def test_new_york_hourly_on_spring_forward_night() -> None:
    fires = fires_between("0 * * * *", NEW_YORK, utc(2024, 3, 10, 4, 30), utc(2024, 3, 10, 9))
    # local 00:00 EST, 01:00 EST, (02:00 skipped: fires at 03:00 EDT, which is also 03:00)
    assert fires == [utc(2024, 3, 10, hour) for hour in (5, 6, 7, 8, 9)]


def test_new_york_fall_back_repeated_time_fires_once_at_first_occurrence() -> None:
    # 2024-11-03 02:00 EDT falls back to 01:00 EST (06:00 UTC); 01:00-02:00 happens twice
    fires = fire_times(CronTrigger("30 1 * * *", NEW_YORK), utc(2024, 11, 2, 12), 2)
    assert fires == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
    assert fires[0] == local(NEW_YORK, 2024, 11, 3, 1, 30, fold=0).astimezone(UTC)


def test_new_york_fall_back_hourly_fires_at_each_real_hour_once() -> None:
    fires = fires_between("0 * * * *", NEW_YORK, utc(2024, 11, 3, 3, 30), utc(2024, 11, 3, 8))
    # 00:00 EDT, 01:00 EDT, then 02:00 EST; 01:00 EST repeats a wall time and does not fire
    assert fires == [utc(2024, 11, 3, hour) for hour in (4, 5, 7, 8)]


def test_new_york_fall_back_half_hourly_does_not_fire_twice() -> None:
    fires = fires_between("*/30 * * * *", NEW_YORK, utc(2024, 11, 3, 4, 45), utc(2024, 11, 3, 7))
    assert fires == [utc(2024, 11, 3, 5), utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 7)]


def test_new_york_instant_in_second_pass_of_repeated_hour() -> None:
    second_pass = local(NEW_YORK, 2024, 11, 3, 1, 10, fold=1)
    assert second_pass.astimezone(UTC) == utc(2024, 11, 3, 6, 10)
    # wall times 01:10-01:59 already fired during the first pass
    assert CronTrigger("*/30 * * * *", NEW_YORK).next_after(second_pass) == utc(2024, 11, 3, 7)
    assert CronTrigger("45 1 * * *", NEW_YORK).next_after(second_pass) == utc(2024, 11, 4, 6, 45)
    first_pass = local(NEW_YORK, 2024, 11, 3, 1, 10, fold=0)
    assert CronTrigger("45 1 * * *", NEW_YORK).next_after(first_pass) == utc(2024, 11, 3, 5, 45)


# ---------------------------------------------------------------- London, 2024


def test_london_spring_forward() -> None:
    # 2024-03-31 01:00 GMT jumps to 02:00 BST (01:00 UTC)
    fires = fire_times(CronTrigger("30 1 * * *", LONDON), utc(2024, 3, 30, 12), 2)
    assert fires == [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)]
    fires = fires_between("*/20 1 * * *", LONDON, utc(2024, 3, 30, 12), utc(2024, 3, 31, 12))
    assert fires == [utc(2024, 3, 31, 1)]


def test_london_fall_back() -> None:
    # 2024-10-27 02:00 BST falls back to 01:00 GMT (01:00 UTC)
    fires = fire_times(CronTrigger("30 1 * * *", LONDON), utc(2024, 10, 26, 12), 2)
    assert fires == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]
    fires = fires_between("0 * * * *", LONDON, utc(2024, 10, 26, 22, 30), utc(2024, 10, 27, 3))
    # 00:00 BST, 01:00 BST, (01:00 GMT repeats), 02:00 GMT, 03:00 GMT
    assert fires == [utc(2024, 10, 26, 23)] + [utc(2024, 10, 27, hour) for hour in (0, 2, 3)]


# ---------------------------------------------------------------- Lord Howe, 30-minute DST


def test_lord_howe_spring_forward_half_hour_gap() -> None:
    # 2024-10-06 02:00 +10:30 jumps to 02:30 +11 (2024-10-05 15:30 UTC)
    assert local(LORD_HOWE, 2024, 10, 6, 2, 30).astimezone(UTC) == utc(2024, 10, 5, 15, 30)
    fires = fire_times(CronTrigger("15 2 * * *", LORD_HOWE), utc(2024, 10, 5), 2)
    assert fires == [utc(2024, 10, 5, 15, 30), utc(2024, 10, 6, 15, 15)]
    fires = fires_between("*/10 2 * * *", LORD_HOWE, utc(2024, 10, 5), utc(2024, 10, 5, 16))
    # 02:00-02:20 collapse onto 02:30, which matches too; then 02:40 and 02:50 are real
    assert fires == [utc(2024, 10, 5, 15, 30), utc(2024, 10, 5, 15, 40), utc(2024, 10, 5, 15, 50)]


def test_lord_howe_fall_back_half_hour_overlap() -> None:
    # 2024-04-07 02:00 +11 falls back to 01:30 +10:30 (2024-04-06 15:00 UTC)
    fires = fire_times(CronTrigger("45 1 * * *", LORD_HOWE), utc(2024, 4, 6), 2)
    assert fires == [utc(2024, 4, 6, 14, 45), utc(2024, 4, 7, 15, 15)]
    fires = fires_between("*/15 * * * *", LORD_HOWE, utc(2024, 4, 6, 14, 20), utc(2024, 4, 6, 16))
    # 01:30 and 01:45 fire in the first pass only; the second pass of 01:30-01:59 is silent
    expected = [utc(2024, 4, 6, 14, 30), utc(2024, 4, 6, 14, 45)]
    expected += [utc(2024, 4, 6, 15, 30), utc(2024, 4, 6, 15, 45), utc(2024, 4, 6, 16)]
    assert fires == expected


# ---------------------------------------------------------------- no DST and odd zones


def test_shanghai_daily_at_two_is_previous_day_18_utc_all_year() -> None:
    trigger = CronTrigger("0 2 * * *", SHANGHAI)
    for start in (utc(2024, 3, 9, 12), utc(2024, 7, 1), utc(2024, 11, 2, 12)):
        fires = fire_times(trigger, start, 3)
        assert all(f.hour == 18 and f.minute == 0 for f in fires)
        assert [f - fires[0] for f in fires] == [timedelta(days=d) for d in range(3)]
    assert trigger.next_after(utc(2024, 3, 9, 12)) == utc(2024, 3, 9, 18)


@pytest.mark.parametrize(
    ("zone", "start", "silent_minutes"),
    [
        (NEW_YORK, utc(2024, 3, 10), 0),
        (NEW_YORK, utc(2024, 11, 3), 60),
        (LONDON, utc(2024, 3, 30, 20), 0),
        (LONDON, utc(2024, 10, 26, 20), 60),
        (LORD_HOWE, utc(2024, 10, 5, 8), 0),
        (LORD_HOWE, utc(2024, 4, 6, 8), 30),
        (SHANGHAI, utc(2024, 3, 10), 0),
        ("UTC", utc(2024, 3, 10), 0),
    ],
)
def test_every_minute_across_a_transition(zone: str, start: datetime, silent_minutes: int) -> None:
    # spring-forward drops no real minute (the gap's wall times share the instant after it);
    # fall-back stays silent for exactly the repeated wall times of the second pass
    fires = fire_times(CronTrigger("* * * * *", zone), start, 1000)
    steps = [b - a for a, b in itertools.pairwise(fires)]
    long_steps = [step for step in steps if step != timedelta(minutes=1)]
    if silent_minutes:
        assert long_steps == [timedelta(minutes=1 + silent_minutes)]
    else:
        assert long_steps == []


def test_samoa_skipped_day_fires_once_at_gap_end() -> None:
    # Pacific/Apia skipped 2011-12-30 entirely: 23:59:59 on the 29th (-10) -> 00:00 on the 31st
    fires = fire_times(CronTrigger("0 12 * * *", "Pacific/Apia"), utc(2011, 12, 29, 12), 3)
    assert fires[0] == utc(2011, 12, 29, 22)  # 12:00 on the 29th at -10
    assert fires[1] == utc(2011, 12, 30, 10)  # 12:00 on the 30th never happened: 00:00 on the 31st
    assert fires[1] == local("Pacific/Apia", 2011, 12, 31).astimezone(UTC)
    assert fires[2] == utc(2011, 12, 30, 22)  # 12:00 on the 31st at +14
