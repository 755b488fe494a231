"""Examples for every trigger type, the cron grammar, validation errors and trigger_for."""

from __future__ import annotations

import itertools
import pickle
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dataforge_scheduler.core.enums import TaskType
from dataforge_scheduler.core.triggers import (
    MAX_FIRE_TIMES,
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    InvalidSchedule,
    ManualTrigger,
    Trigger,
    WindowedTrigger,
    fire_times,
    trigger_for,
    validate_cron,
    validate_timezone,
)
from dataforge_scheduler.errors import InvalidSchedule as ErrorsInvalidSchedule


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def field_of(error: InvalidSchedule) -> object:
    return error.details["field"]


# 2024-01-01 is a Monday
MONDAY = utc(2024, 1, 1, 10, 7, 30)


# ---------------------------------------------------------------- cron examples


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 * * * *", [utc(2024, 1, 1, 11), utc(2024, 1, 1, 12), utc(2024, 1, 1, 13)]),
        (
            "*/5 * * * *",
            [utc(2024, 1, 1, 10, 10), utc(2024, 1, 1, 10, 15), utc(2024, 1, 1, 10, 20)],
        ),
        ("0 2 * * *", [utc(2024, 1, 2, 2), utc(2024, 1, 3, 2), utc(2024, 1, 4, 2)]),
        ("0 0 * * 0", [utc(2024, 1, 7), utc(2024, 1, 14), utc(2024, 1, 21)]),
        ("30 8 * * 1-5", [utc(2024, 1, 2, 8, 30), utc(2024, 1, 3, 8, 30), utc(2024, 1, 4, 8, 30)]),
        ("0 9 1 * *", [utc(2024, 2, 1, 9), utc(2024, 3, 1, 9), utc(2024, 4, 1, 9)]),
        ("0 0 1 1 *", [utc(2025, 1, 1), utc(2026, 1, 1), utc(2027, 1, 1)]),
        ("1-30/5 10 * * *", [utc(2024, 1, 1, 10, 11), utc(2024, 1, 1, 10, 16)]),
        (
            "5/20 * * * *",
            [utc(2024, 1, 1, 10, 25), utc(2024, 1, 1, 10, 45), utc(2024, 1, 1, 11, 5)],
        ),
        ("0,30 9-10 * * *", [utc(2024, 1, 1, 10, 30), utc(2024, 1, 2, 9), utc(2024, 1, 2, 9, 30)]),
    ],
)
def test_cron_examples(expression: str, expected: list[datetime]) -> None:
    assert fire_times(CronTrigger(expression), MONDAY, len(expected)) == expected


def test_cron_friday_after_monday_skips_weekend() -> None:
    fires = fire_times(CronTrigger("30 8 * * 1-5"), utc(2024, 1, 5, 9), 2)
    assert fires == [utc(2024, 1, 8, 8, 30), utc(2024, 1, 9, 8, 30)]


def test_cron_is_strictly_after_an_instant_on_a_fire_time() -> None:
    assert CronTrigger("0 * * * *").next_after(utc(2024, 1, 1, 11)) == utc(2024, 1, 1, 12)
    just_before = utc(2024, 1, 1, 11) - timedelta(microseconds=1)
    assert CronTrigger("0 * * * *").next_after(just_before) == utc(2024, 1, 1, 11)


def test_cron_result_is_utc_for_non_utc_input() -> None:
    instant = datetime(2024, 1, 1, 18, 7, tzinfo=ZoneInfo("Asia/Shanghai"))
    fire = CronTrigger("0 * * * *").next_after(instant)
    assert fire == utc(2024, 1, 1, 11)
    assert fire is not None
    assert fire.tzinfo is UTC


def test_cron_evaluated_in_its_timezone() -> None:
    trigger = CronTrigger("0 9 * * *", "Asia/Shanghai")
    assert trigger.next_after(MONDAY) == utc(2024, 1, 2, 1)
    same = CronTrigger("0 9 * * *", ZoneInfo("Asia/Shanghai"))
    assert same.next_after(MONDAY) == utc(2024, 1, 2, 1)


@pytest.mark.parametrize(
    ("nickname", "expansion"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_cron_nicknames(nickname: str, expansion: str) -> None:
    expected = fire_times(CronTrigger(expansion), MONDAY, 3)
    assert fire_times(CronTrigger(nickname), MONDAY, 3) == expected
    assert len(set(expected)) == 3


@pytest.mark.parametrize(
    ("named", "numeric"),
    [
        ("0 0 1 jan,JUL *", "0 0 1 1,7 *"),
        ("0 0 1 Mar-May *", "0 0 1 3-5 *"),
        ("0 0 * * MON-FRI", "0 0 * * 1-5"),
        ("0 0 * * sun", "0 0 * * 0"),
        ("0 0 * * 7", "0 0 * * 0"),
        ("0 0 * * fri-sun", "0 0 * * 5,6,0"),
        ("0 0 * * 5-7", "0 0 * * 0,5,6"),
        ("0 0 * * */2", "0 0 * * 0,2,4,6"),
    ],
)
def test_cron_names_and_sunday_numbers(named: str, numeric: str) -> None:
    assert fire_times(CronTrigger(named), MONDAY, 12) == fire_times(
        CronTrigger(numeric), MONDAY, 12
    )


def test_vixie_rule_either_day_field_matches_when_both_are_restricted() -> None:
    # the 13th of the month OR any Friday
    fires = fire_times(CronTrigger("0 0 13 * 5"), utc(2024, 9, 1), 5)
    expected = [utc(2024, 9, 6), utc(2024, 9, 13), utc(2024, 9, 20), utc(2024, 9, 27)]
    assert fires == [*expected, utc(2024, 10, 4)]


def test_vixie_rule_only_weekday_when_day_of_month_is_star() -> None:
    fires = fire_times(CronTrigger("0 0 * * 5"), utc(2024, 9, 1), 2)
    assert fires == [utc(2024, 9, 6), utc(2024, 9, 13)]
    fires = fire_times(CronTrigger("0 0 13 * *"), utc(2024, 9, 1), 2)
    assert fires == [utc(2024, 9, 13), utc(2024, 10, 13)]


def test_vixie_rule_a_stepped_star_counts_as_restricted() -> None:
    # "*/10" is not a bare "*": days 1, 11, 21, 31 OR Mondays
    fires = fire_times(CronTrigger("0 0 */10 * 1"), utc(2024, 7, 1), 6)
    assert [f.day for f in fires] == [8, 11, 15, 21, 22, 29]


def test_leap_day_is_found_promptly() -> None:
    trigger = CronTrigger("0 0 29 2 *")
    started = time.perf_counter()
    assert trigger.next_after(utc(2024, 3, 1)) == utc(2028, 2, 29)
    assert trigger.next_after(utc(2096, 3, 1)) == utc(2104, 2, 29)  # 2100 is not a leap year
    assert time.perf_counter() - started < 0.5


def test_feb_31_with_a_weekday_still_fires_on_the_weekday() -> None:
    assert CronTrigger("0 0 31 2 1").next_after(utc(2024, 1, 1)) == utc(2024, 2, 5)


def test_cron_past_year_9999_is_none() -> None:
    assert CronTrigger("0 0 1 1 *").next_after(datetime(9999, 6, 1, tzinfo=UTC)) is None


# ---------------------------------------------------------------- cron validation


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("61 * * * *", "minute field '61' is out of range 0-59"),
        ("* 24 * * *", "hour field '24' is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0' is out of range 1-31"),
        ("* * * 13 *", "month field '13' is out of range 1-12"),
        ("* * * * 8", "day-of-week field '8' is out of range 0-7"),
        ("1-70 * * * *", "minute field '1-70': '70' is out of range 0-59"),
        ("0 0 1 jan-foo *", "month field 'jan-foo': 'foo' is not a number or a month name"),
        ("* * * foo *", "month field 'foo' is not a number or a month name"),
        ("* * * * funday", "day-of-week field 'funday' is not a number or a weekday name"),
        ("mon * * * *", "minute field 'mon' is not a number"),
        ("* * * mon *", "month field 'mon' is not a number or a month name"),
        ("*/0 * * * *", "minute field '*/0': step '0' must be 1 or more"),
        ("*/x * * * *", "step 'x' must be 1 or more"),
        ("30-10 * * * *", "minute field '30-10': range '30-10' runs backwards"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty list item"),
        ("0 0 L * *", "day-of-month field 'L' is not a number"),
        ("0 0 ? * *", "day-of-month field '?' is not a number"),
        ("-1 * * * *", "minute field '-1': '' is not a number"),
        ("/5 * * * *", "minute field '/5': '' is not a number"),
        ("0 0 * * * *", "has 6 fields; seconds and year fields are not supported"),
        ("0 0 0 * * * 2024", "has 7 fields; seconds and year fields are not supported"),
        ("* * * *", "has 4 fields; expected 5"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("@reboot", "@reboot is not supported"),
        ("@every_minute", "unknown nickname '@every_minute'"),
        ("0 0 31 2 *", "never fires: Feb has no day 31"),
        ("0 0 30,31 2 *", "never fires: Feb has no day 30 or 31"),
        ("0 0 31 4,6 *", "never fires: Apr and Jun have no day 31"),
        ("0 0 31 feb,apr,jun *", "never fires: Feb, Apr and Jun have no day 31"),
    ],
)
def test_validate_cron_names_field_and_value(expression: str, fragment: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate_cron(expression)
    assert fragment in str(caught.value)
    assert repr(expression) in str(caught.value)
    assert field_of(caught.value) == "cron_expression"
    with pytest.raises(InvalidSchedule):
        CronTrigger(expression)


@pytest.mark.parametrize(
    ("expression", "first"),
    [
        ("0 0 29 2 *", utc(2024, 2, 29)),  # a leap day: satisfiable, if rarely
        ("0 0 30 1-2 *", utc(2024, 1, 30)),  # no Feb 30, but Jan 30 exists
        ("0 0 31 2 1", utc(2024, 2, 5)),  # Feb 31 never, OR a Monday in February
        ("@hourly", utc(2024, 1, 1, 1)),
        (" 0  0 * * * ", utc(2024, 1, 2)),  # extra spaces are only separators
    ],
)
def test_validate_cron_accepts(expression: str, first: datetime) -> None:
    validate_cron(expression)
    assert CronTrigger(expression).next_after(utc(2024, 1, 1)) == first


def test_validate_cron_rejects_non_string() -> None:
    with pytest.raises(InvalidSchedule, match="must be a string") as caught:
        validate_cron(None)  # type: ignore[arg-type]
    assert field_of(caught.value) == "cron_expression"


def test_invalid_schedule_is_the_errors_module_class_and_pickles() -> None:
    assert InvalidSchedule is ErrorsInvalidSchedule
    with pytest.raises(InvalidSchedule) as caught:
        validate_cron("61 * * * *")
    clone = pickle.loads(pickle.dumps(caught.value))
    assert field_of(clone) == "cron_expression"
    assert str(clone) == str(caught.value)


# ---------------------------------------------------------------- timezones


def test_validate_timezone_returns_zoneinfo() -> None:
    assert validate_timezone("Europe/London") == ZoneInfo("Europe/London")


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/etc/passwd", "America"])
def test_validate_timezone_rejects(name: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate_timezone(name)
    assert field_of(caught.value) == "timezone"
    assert repr(name) in str(caught.value)


def test_validate_timezone_names_a_custom_field() -> None:
    with pytest.raises(InvalidSchedule, match="celery_timezone 'Nowhere'") as caught:
        validate_timezone("Nowhere", field="celery_timezone")
    assert field_of(caught.value) == "celery_timezone"


def test_cron_trigger_rejects_bad_timezone() -> None:
    with pytest.raises(InvalidSchedule, match="'Mars/Olympus'") as caught:
        CronTrigger("0 * * * *", "Mars/Olympus")
    assert field_of(caught.value) == "timezone"


# ---------------------------------------------------------------- interval


ANCHOR = utc(2024, 1, 1, 12)


def test_interval_first_fires_one_interval_after_anchor() -> None:
    trigger = IntervalTrigger(3600, ANCHOR)
    assert trigger.next_after(ANCHOR) == utc(2024, 1, 1, 13)
    assert trigger.next_after(ANCHOR - timedelta(days=3)) == utc(2024, 1, 1, 13)


def test_interval_stays_on_grid_however_late() -> None:
    trigger = IntervalTrigger(3600, ANCHOR)
    late = utc(2024, 1, 5, 9, 59, 59, 999999)
    assert trigger.next_after(late) == utc(2024, 1, 5, 10)
    assert trigger.next_after(utc(2024, 1, 5, 10)) == utc(2024, 1, 5, 11)
    fire = trigger.next_after(utc(2024, 1, 5, 10, 0, 1))
    assert fire == utc(2024, 1, 5, 11)
    assert fire is not None
    assert fire.tzinfo is UTC


def test_interval_is_arithmetic_far_from_anchor() -> None:
    trigger = IntervalTrigger(7, ANCHOR)
    fire = trigger.next_after(utc(2999, 1, 1))
    assert fire is not None
    assert (fire - ANCHOR) % timedelta(seconds=7) == timedelta(0)
    assert timedelta(0) < fire - utc(2999, 1, 1) <= timedelta(seconds=7)


def test_interval_with_non_utc_anchor() -> None:
    anchor = datetime(2024, 1, 1, 20, tzinfo=ZoneInfo("Asia/Shanghai"))
    trigger = IntervalTrigger(60, anchor)
    assert trigger.anchor == ANCHOR
    assert trigger.next_after(ANCHOR) == ANCHOR + timedelta(minutes=1)


def test_interval_past_datetime_max_is_none() -> None:
    trigger = IntervalTrigger(86400 * 365, ANCHOR)
    assert trigger.next_after(datetime(9999, 12, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize("seconds", [0, -1, -3600, True, False, 1.5, "60", None])
def test_interval_rejects_bad_seconds(seconds: object) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        IntervalTrigger(seconds, ANCHOR)  # type: ignore[arg-type]
    assert field_of(caught.value) == "interval_seconds"
    assert repr(seconds) in str(caught.value)


def test_interval_rejects_huge_seconds() -> None:
    with pytest.raises(InvalidSchedule, match="too large") as caught:
        IntervalTrigger(10**20, ANCHOR)
    assert field_of(caught.value) == "interval_seconds"


def test_interval_rejects_naive_anchor() -> None:
    with pytest.raises(InvalidSchedule, match="timezone-aware") as caught:
        IntervalTrigger(60, datetime(2024, 1, 1))  # noqa: DTZ001 - the naive value under test
    assert field_of(caught.value) == "start_at"


# ---------------------------------------------------------------- date and manual


def test_date_fires_once() -> None:
    run_at = utc(2024, 6, 1, 12)
    trigger = DateTrigger(run_at)
    assert trigger.next_after(run_at - timedelta(microseconds=1)) == run_at
    assert trigger.next_after(run_at) is None
    assert trigger.next_after(run_at + timedelta(days=1)) is None
    assert fire_times(trigger, utc(2024, 1, 1), 5) == [run_at]


def test_date_converts_to_utc() -> None:
    trigger = DateTrigger(datetime(2024, 6, 1, 20, tzinfo=ZoneInfo("Asia/Shanghai")))
    fire = trigger.next_after(utc(2024, 1, 1))
    assert fire == utc(2024, 6, 1, 12)
    assert fire is not None
    assert fire.tzinfo is UTC


@pytest.mark.parametrize("run_at", [datetime(2024, 6, 1), "2024-06-01T00:00:00Z"])  # noqa: DTZ001
def test_date_rejects_bad_run_at(run_at: object) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        DateTrigger(run_at)  # type: ignore[arg-type]
    assert field_of(caught.value) == "run_at"
    assert "run_at" in str(caught.value)


def test_manual_never_fires() -> None:
    assert ManualTrigger().next_after(MONDAY) is None
    assert fire_times(ManualTrigger(), MONDAY, 10) == []


# ---------------------------------------------------------------- naive instants


@pytest.mark.parametrize(
    "trigger",
    [
        CronTrigger("* * * * *"),
        IntervalTrigger(60, ANCHOR),
        DateTrigger(ANCHOR),
        ManualTrigger(),
        WindowedTrigger(ManualTrigger(), start_at=None, end_at=None),
    ],
    ids=repr,
)
def test_next_after_rejects_naive_instant(trigger: Trigger) -> None:
    assert isinstance(trigger, Trigger)
    with pytest.raises(ValueError, match="timezone-aware"):
        trigger.next_after(datetime(2024, 1, 1))  # noqa: DTZ001 - the naive value under test
    with pytest.raises(ValueError, match="timezone-aware"):
        fire_times(trigger, datetime(2024, 1, 1), 1)  # noqa: DTZ001


# ---------------------------------------------------------------- windows


def test_window_first_fire_is_first_inner_fire_at_or_after_start() -> None:
    hourly = CronTrigger("0 * * * *")
    window = WindowedTrigger(hourly, start_at=utc(2024, 1, 2, 12), end_at=None)
    assert window.next_after(MONDAY) == utc(2024, 1, 2, 12)  # a fire exactly at start_at counts
    window = WindowedTrigger(hourly, start_at=utc(2024, 1, 2, 12, 30), end_at=None)
    assert window.next_after(MONDAY) == utc(2024, 1, 2, 13)
    assert window.next_after(utc(2024, 1, 3)) == utc(2024, 1, 3, 1)


def test_window_stops_after_end() -> None:
    hourly = CronTrigger("0 * * * *")
    window = WindowedTrigger(hourly, start_at=None, end_at=utc(2024, 1, 1, 13))
    # a fire exactly at end_at counts
    expected = [utc(2024, 1, 1, 11), utc(2024, 1, 1, 12), utc(2024, 1, 1, 13)]
    assert fire_times(window, MONDAY, 10) == expected
    assert window.next_after(utc(2024, 2, 1)) is None


def test_window_with_interval_anchored_at_start() -> None:
    start = utc(2024, 1, 2)
    window = WindowedTrigger(IntervalTrigger(600, start), start_at=start, end_at=None)
    assert window.next_after(MONDAY) == start + timedelta(minutes=10)


@pytest.mark.parametrize("end_at", [utc(2024, 1, 2), utc(2024, 1, 1)])
def test_window_rejects_end_not_after_start(end_at: datetime) -> None:
    with pytest.raises(InvalidSchedule, match="must be after start_at") as caught:
        WindowedTrigger(ManualTrigger(), start_at=utc(2024, 1, 2), end_at=end_at)
    assert field_of(caught.value) == "end_at"


@pytest.mark.parametrize("field", ["start_at", "end_at"])
def test_window_rejects_naive_bounds(field: str) -> None:
    naive = datetime(2024, 1, 1)  # noqa: DTZ001 - the naive value under test
    with pytest.raises(InvalidSchedule, match=f"{field} must be timezone-aware") as caught:
        WindowedTrigger(ManualTrigger(), **{"start_at": None, "end_at": None, field: naive})
    assert field_of(caught.value) == field


# ---------------------------------------------------------------- fire_times


def test_fire_times_count_and_cap() -> None:
    minutely = CronTrigger("* * * * *")
    assert fire_times(minutely, MONDAY, 0) == []
    assert len(fire_times(minutely, MONDAY, 3)) == 3
    many = fire_times(minutely, MONDAY, MAX_FIRE_TIMES + 50)
    assert len(many) == MAX_FIRE_TIMES
    assert all(a < b for a, b in itertools.pairwise(many))


@pytest.mark.parametrize("count", [-1, 1.5, True])
def test_fire_times_rejects_bad_count(count: object) -> None:
    with pytest.raises(ValueError, match="count"):
        fire_times(ManualTrigger(), MONDAY, count)  # type: ignore[arg-type]


# ---------------------------------------------------------------- trigger_for


@dataclass
class Row:
    task_type: str
    cron_expression: str | None = None
    interval_seconds: int | None = None
    run_at: datetime | None = None
    timezone: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    created_at: datetime | None = None


def test_trigger_for_cron_uses_row_timezone_then_default() -> None:
    row = Row("cron", cron_expression="0 9 * * *", timezone="Asia/Shanghai")
    assert trigger_for(row, "UTC").next_after(MONDAY) == utc(2024, 1, 2, 1)
    row = Row(TaskType.CRON, cron_expression="0 9 * * *")
    assert trigger_for(row, "Europe/London").next_after(MONDAY) == utc(2024, 1, 2, 9)
    assert trigger_for(row, "Asia/Shanghai").next_after(MONDAY) == utc(2024, 1, 2, 1)


@pytest.mark.parametrize("expression", [None, "", "  "])
def test_trigger_for_cron_needs_expression(expression: str | None) -> None:
    with pytest.raises(InvalidSchedule, match="cron_expression") as caught:
        trigger_for(Row("cron", cron_expression=expression), "UTC")
    assert field_of(caught.value) == "cron_expression"


def test_trigger_for_cron_bad_expression() -> None:
    with pytest.raises(InvalidSchedule, match="'61'") as caught:
        trigger_for(Row("cron", cron_expression="61 * * * *"), "UTC")
    assert field_of(caught.value) == "cron_expression"


@pytest.mark.parametrize(("row_zone", "default"), [("Mars/Olympus", "UTC"), (None, "Nowhere")])
def test_trigger_for_bad_timezone(row_zone: str | None, default: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        trigger_for(Row("cron", cron_expression="* * * * *", timezone=row_zone), default)
    assert field_of(caught.value) == "timezone"
    assert repr(row_zone or default) in str(caught.value)


def test_trigger_for_interval_anchors_at_start_at_or_created_at() -> None:
    row = Row("interval", interval_seconds=3600, created_at=utc(2024, 1, 1, 0, 20))
    assert trigger_for(row, "UTC").next_after(MONDAY) == utc(2024, 1, 1, 10, 20)
    row.start_at = utc(2024, 1, 1, 0, 45)
    assert trigger_for(row, "UTC").next_after(MONDAY) == utc(2024, 1, 1, 10, 45)
    row.start_at = utc(2024, 1, 3)
    assert trigger_for(row, "UTC").next_after(MONDAY) == utc(2024, 1, 3, 1)


def test_trigger_for_interval_needs_seconds_and_anchor() -> None:
    with pytest.raises(InvalidSchedule) as caught:
        trigger_for(Row("interval", created_at=ANCHOR), "UTC")
    assert field_of(caught.value) == "interval_seconds"
    with pytest.raises(InvalidSchedule, match="needs an anchor") as caught:
        trigger_for(Row("interval", interval_seconds=60), "UTC")
    assert field_of(caught.value) == "start_at"
    with pytest.raises(InvalidSchedule) as caught:
        trigger_for(Row("interval", interval_seconds=0, created_at=ANCHOR), "UTC")
    assert field_of(caught.value) == "interval_seconds"


def test_trigger_for_date_and_manual() -> None:
    run_at = utc(2024, 6, 1)
    assert trigger_for(Row("date", run_at=run_at), "UTC").next_after(MONDAY) == run_at
    with pytest.raises(InvalidSchedule, match="run_at") as caught:
        trigger_for(Row("date"), "UTC")
    assert field_of(caught.value) == "run_at"
    manual = trigger_for(Row("manual", start_at=ANCHOR, end_at=utc(2030, 1, 1)), "UTC")
    assert manual.next_after(MONDAY) is None


@pytest.mark.parametrize("task_type", ["weekly", "CRON", ""])
def test_trigger_for_unknown_task_type(task_type: str) -> None:
    with pytest.raises(InvalidSchedule, match="cron, interval, date, manual") as caught:
        trigger_for(Row(task_type), "UTC")
    assert field_of(caught.value) == "task_type"
    assert repr(task_type) in str(caught.value)


def test_trigger_for_applies_window() -> None:
    row = Row(
        "cron",
        cron_expression="0 0 * * *",
        start_at=utc(2024, 1, 10, 0, 0, 1),
        end_at=utc(2024, 1, 12),
    )
    trigger = trigger_for(row, "UTC")
    assert isinstance(trigger, WindowedTrigger)
    assert fire_times(trigger, MONDAY, 5) == [utc(2024, 1, 11), utc(2024, 1, 12)]
    row.end_at = row.start_at
    with pytest.raises(InvalidSchedule) as caught:
        trigger_for(row, "UTC")
    assert field_of(caught.value) == "end_at"


def test_trigger_for_reads_naive_stored_datetimes_as_utc() -> None:
    # SQLite returns naive datetimes for timezone-aware columns
    row = Row("date", run_at=datetime(2024, 6, 1))  # noqa: DTZ001 - what SQLite hands back
    assert trigger_for(row, "UTC").next_after(MONDAY) == utc(2024, 6, 1)
    row = Row("interval", interval_seconds=60, created_at=datetime(2024, 1, 1, 10))  # noqa: DTZ001
    assert trigger_for(row, "UTC").next_after(MONDAY) == utc(2024, 1, 1, 10, 8)
