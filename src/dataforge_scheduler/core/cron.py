"""Cron expressions: parsing, validation and the wall-clock search behind ``CronTrigger``.

This module owns the five-field cron grammar (lists, ranges, steps, month and weekday
names, nicknames), the Vixie-cron day rule, and the mapping from matching wall times in a
zone to UTC instants, including what happens on DST nights: a wall time skipped by a
forward gap fires once at the gap's end, and a repeated wall time fires at its first
occurrence. It is pure Python over ``zoneinfo``; ``croniter`` is deliberately not used for
the search because its DST handling is unreliable.
"""

from __future__ import annotations

import calendar
import functools
import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dataforge_scheduler.errors import InvalidSchedule

__all__ = ["CronSpec", "next_fire", "next_wall_time", "parse_cron", "resolve_wall_time"]

_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_ABBR = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NAMES = {name: number for number, name in enumerate(_MONTH_ABBR, start=1)}
_WEEKDAY_NAMES = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
_DIGITS = re.compile(r"[0-9]+")
# The longest gap between two matches of a satisfiable expression is Feb 29 across a
# skipped century leap year (2096 -> 2104); searching a little further is always enough.
_SEARCH_YEARS = 9
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class _FieldGrammar:
    name: str
    low: int
    high: int
    names: dict[str, int]
    hint: str


_GRAMMARS = (
    _FieldGrammar("minute", 0, 59, {}, "a number"),
    _FieldGrammar("hour", 0, 23, {}, "a number"),
    _FieldGrammar("day-of-month", 1, 31, {}, "a number"),
    _FieldGrammar("month", 1, 12, _MONTH_NAMES, "a number or a month name (JAN-DEC)"),
    _FieldGrammar("day-of-week", 0, 7, _WEEKDAY_NAMES, "a number or a weekday name (SUN-SAT)"),
)


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed cron expression: the allowed values of each field.

    ``weekdays`` uses cron numbering (0 = Sunday; a written 7 is stored as 0).
    ``day_or`` is the Vixie-cron rule: when both day fields are restricted (neither is
    written as a bare ``*``), a day matches if either field matches.
    """

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_or: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def matches(self, wall: datetime) -> bool:
        """Whether a naive wall time (minute resolution) matches every field."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and self.day_matches(wall.date())
        )


def _error(expression: str, reason: str) -> InvalidSchedule:
    return InvalidSchedule(
        f"cron expression {expression!r}: {reason}", field="cron_expression", value=expression
    )


def _value(token: str, item: str, grammar: _FieldGrammar, expression: str) -> int:
    where = f"{grammar.name} field {item!r}"
    if token != item:
        where += f": {token!r}"
    if _DIGITS.fullmatch(token):
        number = int(token)
    elif token.lower() in grammar.names:
        number = grammar.names[token.lower()]
    else:
        raise _error(expression, f"{where} is not {grammar.hint}")
    if not grammar.low <= number <= grammar.high:
        raise _error(expression, f"{where} is out of range {grammar.low}-{grammar.high}")
    return number


def _parse_item(item: str, grammar: _FieldGrammar, expression: str) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _DIGITS.fullmatch(step_text) or int(step_text) == 0:
            raise _error(
                expression, f"{grammar.name} field {item!r}: step {step_text!r} must be 1 or more"
            )
        step = int(step_text)
    if base == "*":
        return range(grammar.low, grammar.high + 1, step)
    first, dash, last = base.partition("-")
    start = _value(first, item, grammar, expression)
    if dash:
        end = _value(last, item, grammar, expression)
        if end == 0 < start and grammar.names is _WEEKDAY_NAMES and last.lower() == "sun":
            end = 7  # "fri-sun" reads as Friday to Sunday
        if start > end:
            raise _error(
                expression, f"{grammar.name} field {item!r}: range {base!r} runs backwards"
            )
    else:
        # "5/15" means "5-max/15", as in cronie and croniter
        end = grammar.high if slash else start
    return range(start, end + 1, step)


def _parse_field(text: str, grammar: _FieldGrammar, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _error(expression, f"{grammar.name} field {text!r} has an empty list item")
        values.update(_parse_item(item, grammar, expression))
    return frozenset(values)


def _split_fields(expression: str) -> list[str]:
    text = expression.strip()
    if not text:
        raise _error(expression, "is empty")
    if text.startswith("@"):
        nickname = text.lower()
        if nickname == "@reboot":
            raise _error(
                expression,
                "@reboot is not supported: a schedule fires at wall-clock times, not at start-up",
            )
        if nickname not in _NICKNAMES:
            raise _error(
                expression, f"unknown nickname {text!r}; use one of {', '.join(_NICKNAMES)}"
            )
        text = _NICKNAMES[nickname]
    fields = text.split()
    if len(fields) in (6, 7):
        raise _error(
            expression,
            f"has {len(fields)} fields; seconds and year fields are not supported, use the "
            "standard 5 fields (minute hour day-of-month month day-of-week)",
        )
    if len(fields) != 5:
        raise _error(
            expression,
            f"has {len(fields)} fields; expected 5 (minute hour day-of-month month day-of-week)",
        )
    return fields


def _check_satisfiable(spec: CronSpec) -> None:
    """Reject day-of-month/month combinations that no calendar ever has."""
    if spec.day_or:
        return  # a restricted weekday always matches some day of every month
    # 2000 is a leap year, so February counts its 29th
    longest = max(calendar.monthrange(2000, month)[1] for month in spec.months)
    if min(spec.days) <= longest:
        return
    months = sorted(spec.months)
    names = [_MONTH_ABBR[m - 1].title() for m in months]
    subject = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    verb = "has" if len(names) == 1 else "have"
    days = " or ".join(str(d) for d in sorted(spec.days))
    raise _error(spec.expression, f"never fires: {subject} {verb} no day {days}")


def parse_cron(expression: str) -> CronSpec:
    """Parse a 5-field expression or nickname; ``InvalidSchedule`` names the bad field."""
    if not isinstance(expression, str):
        raise InvalidSchedule(
            f"cron expression must be a string, got {expression!r}",
            field="cron_expression",
            value=expression,
        )
    return _parse(expression)


@functools.lru_cache(maxsize=1024)
def _parse(expression: str) -> CronSpec:
    fields = _split_fields(expression)
    minute, hour, dom, month, dow = (
        _parse_field(text, grammar, expression)
        for text, grammar in zip(fields, _GRAMMARS, strict=True)
    )
    spec = CronSpec(
        expression=expression,
        minutes=tuple(sorted(minute)),
        hours=tuple(sorted(hour)),
        days=dom,
        months=month,
        weekdays=frozenset(d % 7 for d in dow),
        day_or=fields[2] != "*" and fields[4] != "*",
    )
    _check_satisfiable(spec)
    return spec


def _first_time_of_day(spec: CronSpec, hour: int, minute: int) -> time | None:
    """The earliest matching time of day at or after ``hour:minute``."""
    index = bisect_left(spec.hours, hour)
    if index < len(spec.hours) and spec.hours[index] == hour:
        at = bisect_left(spec.minutes, minute)
        if at < len(spec.minutes):
            return time(hour, spec.minutes[at])
        index += 1
    if index < len(spec.hours):
        return time(spec.hours[index], spec.minutes[0])
    return None


def next_wall_time(spec: CronSpec, start: datetime, *, until: date) -> datetime | None:
    """The first matching naive wall time at or after ``start`` (minute-aligned), by day.

    Days in months the expression excludes are skipped a month at a time; only matching
    days look at hours and minutes. ``None`` when nothing matches on or before ``until``.
    """
    day, hour, minute = start.date(), start.hour, start.minute
    while day <= until:
        if day.month not in spec.months:
            if day.month == 12:
                if day.year >= until.year:
                    return None
                day = date(day.year + 1, 1, 1)
            else:
                day = date(day.year, day.month + 1, 1)
            hour = minute = 0
            continue
        if spec.day_matches(day):
            found = _first_time_of_day(spec, hour, minute)
            if found is not None:
                return datetime.combine(day, found)
        if day == until:
            return None
        day += timedelta(days=1)
        hour = minute = 0
    return None


def _gap_end(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The transition instant in ``(before, after]`` where ``zone`` jumps its offset.

    zoneinfo's transitions fall on whole seconds, so a bisection over seconds is exact.
    """
    low = int(before.timestamp())
    high = math.ceil(after.timestamp())
    offset = datetime.fromtimestamp(low, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def resolve_wall_time(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which a naive wall time in ``zone`` fires.

    An ordinary wall time maps to its instant; a repeated one (fall-back) to its first
    occurrence (fold=0); a skipped one (spring-forward gap) to the first instant after the
    gap, so every wall time of one gap fires at the same instant.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first <= second:
        return first
    # PEP 495: inside a gap, fold=0 uses the offset before the jump and fold=1 the one
    # after, so the transition lies between the two readings.
    return _gap_end(second, first, zone)


def next_fire(spec: CronSpec, zone: ZoneInfo, instant: datetime) -> datetime | None:
    """The first fire of ``spec`` in ``zone`` strictly after the aware ``instant``, in UTC.

    Fire instants are non-decreasing in wall time, and no wall time at or before the
    instant's own wall time can fire after it, so the search starts at the next whole
    wall minute and returns the first matching wall time whose fire lies after
    ``instant``. Those it passes over are the repeated hour's wall times when ``instant``
    is in its second pass (they already fired) and gap wall times that already fired.
    """
    local = instant.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    try:
        cursor = local + _MINUTE
        until = date(min(cursor.year + _SEARCH_YEARS, date.max.year), 12, 31)
        while True:
            wall = next_wall_time(spec, cursor, until=until)
            if wall is None:
                return None
            fire = resolve_wall_time(wall, zone)
            if fire > instant:
                return fire
            cursor = wall + _MINUTE
    except OverflowError:
        return None  # past year 9999
