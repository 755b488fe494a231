"""Exclusion windows: spans of time in which a schedule's slots are not sent.

A schedule may list up to ``MAX_WINDOWS`` windows (``scheduled_tasks.exclusions``, JSON),
each one of:

- a range, ``{"start": "2026-12-24T00:00", "end": "2026-12-27T00:00"}``: wall times in
  the schedule's zone (or ISO 8601 with an offset), ``start`` included, ``end`` not;
- dates, ``{"dates": ["2026-01-01", "2026-10-01"]}``: those whole days in the zone (a
  holiday list);
- a recurring window, ``{"cron": "0 0 * * 6", "duration_seconds": 172800}``: opening
  at each fire of the cron expression, in the zone, for that long (here, weekends).

Each may carry a ``name`` (else ``exclusions[i]``), which the preview reports. A slot
inside any window is not a slot: ``ExcludingTrigger`` answers the first fire of the
schedule's own trigger outside every window, jumping over a window at once (so a
minutely cron under a weekend window costs a few steps, not 2,880). Every beat reads
the same windows, so they all agree. ``InvalidSchedule`` names ``exclusions`` (and the
window's index) for a window that cannot be read, and for windows that leave no slot
in ``MAX_JUMPS`` consecutive windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dataforge_scheduler.core.cron import resolve_wall_time
from dataforge_scheduler.core.timing import within_calendar
from dataforge_scheduler.errors import InvalidSchedule

__all__ = [
    "MAX_JUMPS",
    "MAX_WINDOWS",
    "ExcludingTrigger",
    "Window",
    "clean_exclusions",
    "parse_exclusions",
]

MAX_WINDOWS = 50
MAX_DATES = 366
MAX_JUMPS = 1_000
MAX_NAME = 64
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    """One exclusion window, read: its name, and either a range (``start``, ``end``,
    aware UTC) or a recurring opening (``cron`` trigger, ``duration``)."""

    name: str
    start: datetime | None = None
    end: datetime | None = None
    cron: Any = None
    duration: timedelta | None = None

    def end_if_covering(self, instant: datetime) -> datetime | None:
        """Where the window ends if it covers ``instant``, else None."""
        if self.start is not None and self.end is not None:
            return self.end if self.start <= instant < self.end else None
        if self.cron is None or self.duration is None:  # pragma: no cover - built by parse
            return None
        opened = self.cron.next_after(instant - self.duration)
        if opened is not None and opened <= instant:
            return opened + self.duration  # type: ignore[no-any-return]
        return None


class ExcludingTrigger:
    """``inner``'s fires, without those inside any of ``windows``."""

    __slots__ = ("inner", "windows")

    def __init__(self, inner: Any, windows: list[Window]) -> None:
        self.inner = inner
        self.windows = windows

    def excluded_by(self, instant: datetime) -> tuple[Window, datetime] | None:
        """The window that covers ``instant`` (the one ending last) and its end."""
        found: tuple[Window, datetime] | None = None
        for window in self.windows:
            end = window.end_if_covering(instant)
            if end is not None and (found is None or end > found[1]):
                found = (window, end)
        return found

    def next_after(self, instant: datetime) -> datetime | None:
        fire = self.inner.next_after(instant)
        for _ in range(MAX_JUMPS):
            if fire is None:
                return None
            covered = self.excluded_by(fire)
            if covered is None:
                return fire  # type: ignore[no-any-return]
            # the first fire at or after the window's end
            fire = self.inner.next_after(max(covered[1] - _MICROSECOND, fire))
        raise InvalidSchedule(
            f"exclusions cover every slot in {MAX_JUMPS} windows after {instant.isoformat()}",
            field="exclusions",
        )

    def __repr__(self) -> str:
        return f"ExcludingTrigger({self.inner!r}, {len(self.windows)} window(s))"


def _invalid(index: int | None, message: str, value: Any) -> InvalidSchedule:
    where = "exclusions" if index is None else f"exclusions[{index}]"
    return InvalidSchedule(f"{where}: {message}", field="exclusions", value=value)


def _wall(text: Any, zone: ZoneInfo, index: int, key: str) -> datetime:
    if not isinstance(text, str):
        raise _invalid(index, f"{key} must be an ISO 8601 date-time string", text)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(index, f"{key} is not an ISO 8601 date-time: {text!r}", text) from None
    return _instant(value, zone, index)


def _instant(value: datetime, zone: ZoneInfo, index: int) -> datetime:
    """An aware ``value``, or a wall time in ``zone`` read as cron reads one (a time in a
    spring-forward gap is the first instant after it), within the library's calendar."""
    try:
        if value.tzinfo is None:
            value = resolve_wall_time(value, zone)
        return within_calendar(value, field="exclusions")
    except (InvalidSchedule, OverflowError):
        raise _invalid(
            index, f"{value.isoformat()} is outside the years 1900 to 9000", value
        ) from None


def _day(text: Any, zone: ZoneInfo, index: int) -> tuple[datetime, datetime]:
    if not isinstance(text, str):
        raise _invalid(index, "dates must be ISO dates (YYYY-MM-DD)", text)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise _invalid(index, f"{text!r} is not an ISO date (YYYY-MM-DD)", text) from None
    midnight = datetime.combine(day, time())  # a wall time: read in the zone
    start = _instant(midnight, zone, index)
    return start, _instant(midnight + timedelta(days=1), zone, index)


def _name(raw: dict[str, Any], index: int) -> str:
    name = raw.get("name", f"exclusions[{index}]")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise _invalid(index, f"name must be 1 to {MAX_NAME} characters", name)
    return name


def parse_exclusions(value: Any, timezone: str | ZoneInfo) -> list[Window]:
    """The windows a stored (or given) ``exclusions`` value describes, in ``timezone``;
    ``InvalidSchedule`` naming the window that cannot be read."""
    if value is None:
        return []
    zone = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
    if not isinstance(value, list):
        raise _invalid(None, "must be a list of windows", value)
    if len(value) > MAX_WINDOWS:
        raise _invalid(None, f"at most {MAX_WINDOWS} windows, got {len(value)}", len(value))
    windows: list[Window] = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise _invalid(index, "a window must be an object", raw)
        name = _name(raw, index)
        keys = set(raw) - {"name"}
        if keys == {"start", "end"}:
            windows.append(_range(raw, name, zone, index))
        elif keys == {"dates"}:
            windows.extend(_dates(raw["dates"], name, zone, index))
        elif keys == {"cron", "duration_seconds"}:
            windows.append(_recurring(raw, name, zone, index))
        else:
            raise _invalid(
                index,
                "a window has start and end, or dates, or cron and duration_seconds "
                f"(and an optional name); got {sorted(raw)}",
                raw,
            )
    return windows


def _range(raw: dict[str, Any], name: str, zone: ZoneInfo, index: int) -> Window:
    start = _wall(raw["start"], zone, index, "start")
    end = _wall(raw["end"], zone, index, "end")
    if end <= start:
        raise _invalid(index, "end must be after start", raw)
    return Window(name, start=start, end=end)


def _dates(days: Any, name: str, zone: ZoneInfo, index: int) -> list[Window]:
    if not isinstance(days, list) or not days or len(days) > MAX_DATES:
        raise _invalid(index, f"dates must list 1 to {MAX_DATES} dates", days)
    return [Window(name, *_day(text, zone, index)) for text in days]


def _recurring(raw: dict[str, Any], name: str, zone: ZoneInfo, index: int) -> Window:
    from dataforge_scheduler.core.triggers import CronTrigger, validate_cron  # no cycle

    expression, seconds = raw["cron"], raw["duration_seconds"]
    if not isinstance(expression, str):
        raise _invalid(index, "cron must be a cron expression", expression)
    try:
        validate_cron(expression)
    except InvalidSchedule as exc:
        raise _invalid(index, f"cron: {exc.message}", expression) from None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise _invalid(index, "duration_seconds must be a whole number >= 1", seconds)
    if seconds > 366 * 86400:
        raise _invalid(index, "duration_seconds must be at most a year", seconds)
    return Window(name, cron=CronTrigger(expression, zone), duration=timedelta(seconds=seconds))


def clean_exclusions(value: Any, timezone: str | ZoneInfo) -> list[dict[str, Any]] | None:
    """``value`` checked (``parse_exclusions``) and kept as given: a list of plain
    objects, or None for none (an empty list is none)."""
    if value is None:
        return None
    parse_exclusions(value, timezone)
    return [dict(window) for window in value] or None
