"""Property tests for triggers against independent oracles.

Cron expressions are generated from the field grammars together with the set each field
denotes, so the oracle never parses cron text. Instants are drawn from 2000-2040, half of
them within a few days of one of the zone's own transitions, so DST nights are exercised
in every run. The brute-force oracle walks real UTC minutes and applies the documented
rules directly: a minute fires when its wall time matches and is its first occurrence, or
when it ends a forward gap that skipped a matching wall time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataforge_scheduler.core.triggers import (
    CronTrigger,
    IntervalTrigger,
    InvalidSchedule,
    validate_cron,
)

ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Shanghai", "UTC"]
START = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2040, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
PROPERTY = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Expr:
    """A cron expression and, independently, the values its fields denote."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_or: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.days, (day.weekday() + 1) % 7 in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def matches(self, wall: datetime) -> bool:
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and self.day_matches(wall.date())
        )


def _name(names: list[str] | None, offset: int, number: int, draw: st.DrawFn) -> str:
    index = number - offset
    if names is None or not 0 <= index < len(names) or not draw(st.booleans()):
        return str(number)
    return draw(st.sampled_from([str.lower, str.upper, str.title]))(names[index])


@st.composite
def cron_field(
    draw: st.DrawFn, low: int, high: int, names: list[str] | None = None, offset: int = 0
) -> tuple[str, frozenset[int]]:
    if draw(st.integers(0, 3)) == 0:
        return "*", frozenset(range(low, high + 1))
    texts: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["step", "single", "range", "range_step", "start_step"]))
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        step = draw(st.integers(1, 6) | st.integers(1, high - low + 1))
        a_text, b_text = _name(names, offset, a, draw), _name(names, offset, b, draw)
        text, denoted = {
            "step": (f"*/{step}", range(low, high + 1, step)),
            "single": (a_text, range(a, a + 1)),
            "range": (f"{a_text}-{b_text}", range(a, b + 1)),
            "range_step": (f"{a_text}-{b_text}/{step}", range(a, b + 1, step)),
            "start_step": (f"{a_text}/{step}", range(a, high + 1, step)),
        }[kind]
        texts.append(text)
        values.update(denoted)
    return ",".join(texts), frozenset(values)


@st.composite
def cron_expressions(draw: st.DrawFn, *, daily: bool = False) -> Expr:
    minute, hour = draw(cron_field(0, 59)), draw(cron_field(0, 23))
    if daily:
        dom, month = ("*", frozenset(range(1, 32))), ("*", frozenset(range(1, 13)))
        dow = ("*", frozenset(range(7)))
    else:
        dom = draw(cron_field(1, 31))
        month = draw(cron_field(1, 12, MONTHS, offset=1))
        dow = draw(cron_field(0, 7, WEEKDAYS))
    return Expr(
        text=" ".join(text for text, _ in (minute, hour, dom, month, dow)),
        minutes=minute[1],
        hours=hour[1],
        days=dom[1],
        months=month[1],
        weekdays=frozenset(d % 7 for d in dow[1]),
        day_or=dom[0] != "*" and dow[0] != "*",
    )


@functools.cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """Every offset change of the zone in 2000-2040, found by bisection over seconds."""
    zone, found = ZoneInfo(zone_name), []
    day = START
    while day < END:
        following = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            low, high = int(day.timestamp()), int(following.timestamp())
            offset = day.astimezone(zone).utcoffset()
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(datetime.fromtimestamp(high, UTC))
        day = following
    return tuple(found)


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    near = transitions(zone)
    use_transition = bool(near) and draw(st.booleans())
    if use_transition:
        centre = draw(st.sampled_from(near))
        return centre + timedelta(microseconds=draw(st.integers(-2 * 86400 * 10**6, 86400 * 10**6)))
    span = int((END - START).total_seconds())
    return START + timedelta(
        seconds=draw(st.integers(0, span)), microseconds=draw(st.integers(0, 999_999))
    )


@st.composite
def zoned_cases(draw: st.DrawFn, *, daily: bool = False) -> tuple[Expr, str, datetime]:
    expr = draw(cron_expressions(daily=daily))
    zone = draw(st.sampled_from(ZONES))
    return expr, zone, draw(instants(zone))


def make_trigger(expr: Expr, zone: str) -> CronTrigger:
    try:
        return CronTrigger(expr.text, zone)
    except InvalidSchedule as exc:
        error = str(exc)
    assert "never fires" in error, error
    assume(False)
    raise AssertionError("unreachable: assume(False) raises")


def wall(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None, fold=0)


def gap_walls(instant: datetime, zone: str) -> list[datetime]:
    """The wall minutes skipped by a forward jump ending exactly at ``instant`` (else [])."""
    skipped, cursor = [], wall(instant - timedelta(seconds=1), zone) + timedelta(seconds=1)
    while cursor < wall(instant, zone):
        skipped.append(cursor)
        cursor += MINUTE
    return skipped


def brute_force(expr: Expr, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """Walk real minutes: fire on a matching first occurrence or at the end of a gap that
    skipped a matching wall time (transitions of these zones fall on whole minutes)."""
    tz, fires = ZoneInfo(zone), []
    minute = after.replace(second=0, microsecond=0) + MINUTE
    previous = wall(minute - MINUTE, zone)
    while minute <= until:
        local = minute.astimezone(tz)
        current = local.replace(tzinfo=None, fold=0)
        if local.fold == 0 and expr.matches(current):
            fires.append(minute)
        elif current - previous > MINUTE:
            skipped = previous + MINUTE
            while skipped < current and not expr.matches(skipped):
                skipped += MINUTE
            if skipped < current:
                fires.append(minute)
        previous, minute = current, minute + MINUTE
    return fires


# ---------------------------------------------------------------- cron


@PROPERTY
@given(cron_expressions())
def test_generated_expressions_parse_or_never_fire(expr: Expr) -> None:
    try:
        validate_cron(expr.text)
    except InvalidSchedule as exc:
        error = str(exc)
    else:
        return
    assert "never fires" in error
    assert not expr.day_or
    leap_year = [date(2000, 1, 1) + timedelta(days=n) for n in range(366)]
    assert not any(expr.day_matches(day) for day in leap_year)


@PROPERTY
@given(zoned_cases())
def test_cron_fire_is_after_instant_and_matches_or_ends_a_gap(
    case: tuple[Expr, str, datetime],
) -> None:
    expr, zone, instant = case
    fire = make_trigger(expr, zone).next_after(instant)
    assert fire is not None  # every satisfiable expression fires within 8 years
    assert fire > instant
    assert fire.tzinfo is UTC
    local = fire.astimezone(ZoneInfo(zone))
    assert local.fold == 0, "a repeated wall time fires only at its first occurrence"
    if not expr.matches(local.replace(tzinfo=None)):
        skipped = gap_walls(fire, zone)
        assert skipped, f"{fire} neither matches nor ends a gap"
        assert any(expr.matches(w) for w in skipped)


@PROPERTY
@given(zoned_cases(daily=True))
def test_cron_agrees_with_brute_force_over_two_days(case: tuple[Expr, str, datetime]) -> None:
    expr, zone, instant = case
    until = instant + timedelta(days=2)
    trigger = make_trigger(expr, zone)
    fires, cursor = [], instant
    while (fire := trigger.next_after(cursor)) is not None and fire <= until:
        fires.append(fire)
        cursor = fire
    assert fires == brute_force(expr, zone, instant, until)


@PROPERTY
@given(cron_expressions(), instants("UTC"))
def test_cron_in_utc_agrees_with_a_day_by_day_oracle(expr: Expr, instant: datetime) -> None:
    fire = make_trigger(expr, "UTC").next_after(instant)
    day = instant.date()
    expected = None
    for _ in range(366 * 9):
        if expr.day_matches(day):
            for hour in sorted(expr.hours):
                for minute in sorted(expr.minutes):
                    candidate = datetime.combine(day, datetime.min.time(), UTC).replace(
                        hour=hour, minute=minute
                    )
                    if expected is None and candidate > instant:
                        expected = candidate
        if expected is not None:
            break
        day += timedelta(days=1)
    assert fire == expected


@PROPERTY
@given(zoned_cases())
def test_cron_is_idempotent_and_deterministic(case: tuple[Expr, str, datetime]) -> None:
    expr, zone, instant = case
    trigger = make_trigger(expr, zone)
    fire = trigger.next_after(instant)
    assert fire is not None
    assert trigger.next_after(fire - timedelta(microseconds=1)) == fire
    assert trigger.next_after(instant) == fire
    assert CronTrigger(expr.text, zone).next_after(instant.astimezone(ZoneInfo(zone))) == fire


# ---------------------------------------------------------------- interval


@PROPERTY
@given(
    st.integers(1, 10 * 86400) | st.sampled_from([1, 60, 3600, 86400]),
    instants("UTC"),
    instants("UTC"),
)
def test_interval_fire_is_next_grid_point(
    seconds: int, anchor: datetime, instant: datetime
) -> None:
    trigger = IntervalTrigger(seconds, anchor)
    fire = trigger.next_after(instant)
    assert fire is not None
    step = timedelta(seconds=seconds)
    assert fire > instant
    assert fire >= anchor + step
    assert (fire - anchor) % step == timedelta(0)
    assert fire - step <= max(instant, anchor)
    assert trigger.next_after(fire - timedelta(microseconds=1)) == fire
