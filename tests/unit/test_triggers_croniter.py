"""croniter as a second, independent oracle for ``CronTrigger``.

The library's cron parser and next-fire search are its own; croniter (test extra only) is
used here where it is right. The property test compares the next fire of both on
generated expressions, excluding the cases where they differ by design:

- a window holding a DST transition of the zone (from the first occurrence of the
  instant's wall time to either answer): croniter fires a repeated wall time twice, the
  library once, and croniter drops a skipped wall time when the hour field is every hour;
- a degenerate range ``a-a`` (or ``a-a/n``): croniter widens it to the whole field, so the
  generator never writes one;
- a day-of-week ``a/n`` whose run reaches 7: the library reads it as ``a-7/n`` (7 is
  Sunday), croniter as ``a-6/n``;
- both day fields restricted while one covers its whole range and the other's text holds
  a ``*``: croniter then turns the full field into ``*`` and ANDs the day fields, where the
  library's Vixie rule ORs them.

The example tests below pin each difference, with both answers as measured on croniter
7.0.0, so they fail if croniter changes or if the library does. docs/concepts.md lists
them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tests.unit.test_triggers_properties import END, MONTHS, START, WEEKDAYS, transitions

from dataforge_scheduler.core.triggers import CronTrigger, InvalidSchedule

# fixed offsets (whole, half and quarter hours, east and west) and zones with DST
FIXED_ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Etc/GMT+10", "Asia/Shanghai"]
DST_ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe"]
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def croniter_next(expression: str, zone: str, instant: datetime) -> datetime:
    """croniter's next fire after ``instant`` (its wall times in ``zone``), as aware UTC."""
    start = instant.astimezone(ZoneInfo(zone))
    return croniter(expression, start).get_next(datetime).astimezone(UTC)


def ours_next(expression: str, zone: str, instant: datetime) -> datetime:
    fire = CronTrigger(expression, zone).next_after(instant)
    assert fire is not None
    return fire


# ---------------------------------------------------------------- generated expressions


@dataclass(frozen=True)
class Item:
    """One list item of a field: its text and what it is made of."""

    text: str
    kind: str  # any | every | single | range | range_step | start_step
    start: int = 0
    step: int = 1


@dataclass(frozen=True)
class Field:
    text: str
    items: tuple[Item, ...]
    values: frozenset[int]  # what the item texts denote (day of week 7 read as 0)

    def __repr__(self) -> str:
        return repr(self.text)

    @property
    def star(self) -> bool:
        return self.text == "*"


def _spell(number: int, names: list[str] | None, offset: int, draw: st.DrawFn) -> str:
    index = number - offset
    if names is None or not 0 <= index < len(names) or not draw(st.booleans()):
        return str(number)
    return draw(st.sampled_from([str.lower, str.upper, str.title]))(names[index])


@st.composite
def fields(
    draw: st.DrawFn, low: int, high: int, names: list[str] | None = None, offset: int = 0
) -> Field:
    wrap = 7 if high == 7 else high + 1  # day of week: 7 is Sunday again
    if draw(st.integers(0, 3)) == 0:
        return Field("*", (Item("*", "any"),), frozenset(v % wrap for v in range(low, high + 1)))
    items: list[Item] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["every", "single", "range", "range_step", "start_step"]))
        a = draw(st.integers(low, high))
        # a range always has a < b: croniter reads "a-a" as the whole field (pinned below)
        b = draw(st.integers(a + 1, high)) if a < high else None
        if kind in ("range", "range_step") and b is None:
            kind = "single"
        step = draw(st.integers(1, 6) | st.integers(1, high - low + 1))
        a_text = _spell(a, names, offset, draw)
        b_text = "" if b is None else _spell(b, names, offset, draw)
        top = high if b is None else b
        text, denoted = {
            "every": (f"*/{step}", range(low, high + 1, step)),
            "single": (a_text, range(a, a + 1)),
            "range": (f"{a_text}-{b_text}", range(a, top + 1)),
            "range_step": (f"{a_text}-{b_text}/{step}", range(a, top + 1, step)),
            "start_step": (f"{a_text}/{step}", range(a, high + 1, step)),
        }[kind]
        items.append(Item(text, kind, a, step))
        values.update(v % wrap for v in denoted)
    return Field(",".join(item.text for item in items), tuple(items), frozenset(values))


@dataclass(frozen=True)
class Case:
    minute: Field
    hour: Field
    dom: Field
    month: Field
    dow: Field
    zone: str
    instant: datetime

    @property
    def expression(self) -> str:
        parts = (self.minute, self.hour, self.dom, self.month, self.dow)
        return " ".join(f.text for f in parts)


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    """Aware UTC instants in 2000-2036, half of them within days of a transition."""
    near = [t for t in transitions(zone) if t.year <= 2036]
    if near and draw(st.booleans()):
        centre = draw(st.sampled_from(near))
        offset = draw(st.integers(-3 * 86400 * 10**6, 3 * 86400 * 10**6))
        return centre + timedelta(microseconds=offset)
    span = int((datetime(2037, 1, 1, tzinfo=UTC) - START).total_seconds())
    return START + timedelta(
        seconds=draw(st.integers(0, span)), microseconds=draw(st.integers(0, 999_999))
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    zone = draw(st.sampled_from(FIXED_ZONES + DST_ZONES))
    return Case(
        minute=draw(fields(0, 59)),
        hour=draw(fields(0, 23)),
        dom=draw(fields(1, 31)),
        month=draw(fields(1, 12, MONTHS, offset=1)),
        dow=draw(fields(0, 7, WEEKDAYS)),
        zone=zone,
        instant=draw(instants(zone)),
    )


def dow_start_step_reaches_seven(dow: Field) -> bool:
    """An ``a/n`` day-of-week item (a >= 1) whose run hits 7: the library reads it up to 7
    (Sunday; cronie's day-of-week maximum), croniter up to 6, so Sunday is in one only."""
    return any(
        item.kind == "start_step" and item.start >= 1 and (7 - item.start) % item.step == 0
        for item in dow.items
    )


def croniter_day_rule_differs(dom: Field, dow: Field) -> bool:
    """Whether croniter's day rule is not the library's for these day fields.

    The library ORs the day fields when neither is written as a bare ``*`` (Vixie cron).
    croniter (``day_or=True``, its default) ORs them only when neither field *expands* to
    ``*``, and it expands a field listing its whole range (``1-31``, ``*/1``, ``0-6``) to
    ``*`` when the other field's text contains a ``*`` (``*/2``): the days are then ANDed.
    """
    if dom.star or dow.star:
        return False  # both AND
    dom_full, dow_full = len(dom.values) == 31, len(dow.values) == 7
    return (dom_full and "*" in dow.text) or (dow_full and "*" in dom.text)


def first_occurrence(zone: str, instant: datetime) -> datetime:
    """The first instant with the same wall time as ``instant`` in ``zone``.

    An instant in the second pass of a repeated hour is after the transition, yet the
    library treats the wall times of that hour as already fired (they fired in the first
    pass) where croniter fires them again, so the window starts at the first pass."""
    return min(instant, instant.astimezone(ZoneInfo(zone)).replace(fold=0).astimezone(UTC))


def crosses_transition(zone: str, start: datetime, end: datetime) -> bool:
    """Whether the zone changes its UTC offset in ``(start, end]`` (exact; 2000-2040)."""
    assert start >= START, "before the span transitions() covers"
    assert end < END, "after the span transitions() covers"
    found = transitions(zone)
    return bisect.bisect_right(found, start) != bisect.bisect_right(found, end)


def satisfiable_trigger(expression: str, zone: str) -> CronTrigger | None:
    """The trigger, or ``None`` when the library refuses an expression that never fires
    (``0 0 30 feb *``); any other refusal of a generated expression is a failure."""
    try:
        return CronTrigger(expression, zone)
    except InvalidSchedule as exc:
        error = str(exc)
    assert "never fires" in error, error
    return None


@settings(max_examples=200, deadline=None)
@given(cases())
def test_next_fire_agrees_with_croniter_where_croniter_is_right(case: Case) -> None:
    expression, zone, instant = case.expression, case.zone, case.instant
    assume(not dow_start_step_reaches_seven(case.dow))
    assume(not croniter_day_rule_differs(case.dom, case.dow))
    trigger = satisfiable_trigger(expression, zone)
    assume(trigger is not None)
    assert trigger is not None
    ours = trigger.next_after(instant)
    assert ours is not None
    theirs = croniter_next(expression, zone, instant)
    # croniter's DST handling is not the library's: compare only when no transition of
    # the zone lies between the instant (its wall time's first occurrence) and either answer
    assume(max(ours, theirs) < END)
    assume(not crosses_transition(zone, first_occurrence(zone, instant), max(ours, theirs)))
    assert ours == theirs, f"{expression!r} in {zone} after {instant.isoformat()}"


def test_transition_check_sees_the_zones_transitions() -> None:
    """The exclusion above is not vacuous: it finds New York's 2024 spring-forward, and the
    fixed-offset zones have no transition at all in 2000-2040."""
    assert crosses_transition(NEW_YORK, utc(2024, 3, 10, 6, 59), utc(2024, 3, 10, 7, 0))
    assert not crosses_transition(NEW_YORK, utc(2024, 3, 10, 7, 0), utc(2024, 11, 3, 5, 59))
    assert crosses_transition(NEW_YORK, utc(2024, 3, 10, 7, 0), utc(2024, 11, 3, 6, 0))
    for zone in DST_ZONES:
        assert len(transitions(zone)) >= 40, zone
    for zone in FIXED_ZONES:
        assert transitions(zone) == (), zone


# ---------------------------------------------------------------- pinned differences
# Each case records both answers as measured on croniter 7.0.0; the instants are UTC.


@pytest.mark.parametrize(
    ("expression", "instant", "ours", "theirs"),
    [
        # hour 9 only; croniter: every hour
        ("0 9-9 * * *", utc(2024, 5, 1), utc(2024, 5, 1, 9), utc(2024, 5, 1, 1)),
        # the 1st of the month; croniter: every day
        ("0 0 1-1 * *", utc(2024, 5, 1), utc(2024, 6, 1), utc(2024, 5, 2)),
        # Mondays; croniter: every day (2024-05-01 is a Wednesday)
        ("0 0 * * mon-mon", utc(2024, 5, 1), utc(2024, 5, 6), utc(2024, 5, 2)),
        # minute 5; croniter: "0-59/20", minutes 0, 20 and 40
        ("5-5/20 * * * *", utc(2024, 5, 1), utc(2024, 5, 1, 0, 5), utc(2024, 5, 1, 0, 20)),
    ],
)
def test_degenerate_range_is_one_value_here_and_the_whole_field_in_croniter(
    expression: str, instant: datetime, ours: datetime, theirs: datetime
) -> None:
    assert ours_next(expression, "UTC", instant) == ours
    assert croniter_next(expression, "UTC", instant) == theirs


@pytest.mark.parametrize(
    ("expression", "instant", "ours", "theirs"),
    [
        # Saturday and Sunday (6, 7); croniter: Saturday only (2024-05-04 is a Saturday)
        ("0 0 * * 6/1", utc(2024, 5, 4), utc(2024, 5, 5), utc(2024, 5, 11)),
        # Sunday (7); croniter: "0-6/2", Sun Tue Thu Sat (2024-05-01 is a Wednesday)
        ("0 0 * * 7/2", utc(2024, 5, 1), utc(2024, 5, 5), utc(2024, 5, 2)),
    ],
)
def test_weekday_start_step_runs_to_seven_here_and_to_six_in_croniter(
    expression: str, instant: datetime, ours: datetime, theirs: datetime
) -> None:
    assert ours_next(expression, "UTC", instant) == ours
    assert croniter_next(expression, "UTC", instant) == theirs


@pytest.mark.parametrize(
    ("expression", "instant", "ours", "theirs"),
    [
        # every day (1-31 OR even weekdays); croniter: even weekdays only (Sun Tue Thu
        # Sat). 2024-05-02 is a Thursday, so Friday is next here and Saturday there.
        ("0 0 1-31 * */2", utc(2024, 5, 2), utc(2024, 5, 3), utc(2024, 5, 4)),
        # every day (odd days OR any weekday); croniter: odd days of the month only
        ("0 0 */2 * 0-6", utc(2024, 5, 1), utc(2024, 5, 2), utc(2024, 5, 3)),
    ],
)
def test_full_day_field_is_ored_here_and_anded_in_croniter_beside_a_star_step(
    expression: str, instant: datetime, ours: datetime, theirs: datetime
) -> None:
    assert ours_next(expression, "UTC", instant) == ours
    assert croniter_next(expression, "UTC", instant) == theirs


def test_spring_forward_both_fire_once_at_the_end_of_the_gap() -> None:
    """2024-03-10 in New York: 02:30 does not exist. Both fire at 03:00 EDT (07:00 UTC),
    once, then at 02:30 EDT the next day. croniter 7 agrees here; it is pinned so that a
    change in either is seen."""
    expression, before = "30 2 * * *", utc(2024, 3, 10, 5)  # 00:00 EST
    gap_end, next_day = utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30)
    assert ours_next(expression, NEW_YORK, before) == gap_end
    assert ours_next(expression, NEW_YORK, gap_end) == next_day
    assert croniter_next(expression, NEW_YORK, before) == gap_end
    assert croniter_next(expression, NEW_YORK, gap_end) == next_day


@pytest.mark.parametrize("expression", ["20 * * * *", "20 */1 * * *", "20 0-23 * * *"])
def test_skipped_wall_time_of_an_every_hour_field_fires_here_and_not_in_croniter(
    expression: str,
) -> None:
    """2024-03-10 in New York, from 01:30 EST (06:30 UTC): 02:20 does not exist. The
    library fires it at the gap's end, 03:00 EDT (07:00 UTC); croniter, whose hour field
    reads as ``*`` here, drops it and fires at 03:20 EDT (07:20 UTC). With a restricted
    hour (``20 2 * * *``, ``20 1-3 * * *``) croniter fires at 03:00 EDT too."""
    before = utc(2024, 3, 10, 6, 30)
    assert ours_next(expression, NEW_YORK, before) == utc(2024, 3, 10, 7)
    assert croniter_next(expression, NEW_YORK, before) == utc(2024, 3, 10, 7, 20)
    for restricted in ("20 2 * * *", "20 1-3 * * *"):
        assert ours_next(restricted, NEW_YORK, before) == utc(2024, 3, 10, 7)
        assert croniter_next(restricted, NEW_YORK, before) == utc(2024, 3, 10, 7)


def test_fall_back_fires_once_here_and_twice_in_croniter() -> None:
    """2024-11-03 in New York: 01:30 happens twice. Both fire at 01:30 EDT (05:30 UTC);
    after it the library waits for the next day's 01:30 EST (2024-11-04 06:30 UTC), while
    croniter fires again at the repeated 01:30 EST (2024-11-03 06:30 UTC, fold=1)."""
    expression, before = "30 1 * * *", utc(2024, 11, 3, 4)  # 00:00 EDT
    first = utc(2024, 11, 3, 5, 30)
    assert ours_next(expression, NEW_YORK, before) == first
    assert croniter_next(expression, NEW_YORK, before) == first
    assert ours_next(expression, NEW_YORK, first) == utc(2024, 11, 4, 6, 30)
    repeated = croniter(expression, first.astimezone(ZoneInfo(NEW_YORK))).get_next(datetime)
    assert (repeated.hour, repeated.minute, repeated.fold) == (1, 30, 1)
    assert repeated.astimezone(UTC) == utc(2024, 11, 3, 6, 30)


def test_repeated_hour_does_not_fire_again_here_and_does_in_croniter() -> None:
    """From 01:00 EST on 2024-11-03 (06:00 UTC, the second pass of 01:00-01:59 in New
    York), the library's next fire of ``* * * * *`` is 02:00 EST (07:00 UTC): every minute
    of the repeated hour fired in its first pass. croniter fires 01:01 EST (06:01 UTC)."""
    expression, second_pass = "* * * * *", utc(2024, 11, 3, 6)
    assert ours_next(expression, NEW_YORK, second_pass) == utc(2024, 11, 3, 7)
    assert croniter_next(expression, NEW_YORK, second_pass) == utc(2024, 11, 3, 6, 1)
