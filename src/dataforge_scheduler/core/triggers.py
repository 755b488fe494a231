"""Triggers: given a schedule and an instant, the next fire time.

This module owns the four trigger types (cron, interval, date, manual), the window that
bounds any of them, ``trigger_for`` (a schedule row to its trigger) and the validation of
schedule input (cron expressions, timezones, intervals, datetimes). Everything is pure:
no database, no Celery, no clock; inputs are aware datetimes and every result is aware
UTC. The cron grammar and all DST logic live in ``dataforge_scheduler.core.cron``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dataforge_scheduler.core.cron import CronSpec, next_fire, parse_cron
from dataforge_scheduler.core.enums import TaskType
from dataforge_scheduler.core.exclusions import ExcludingTrigger, parse_exclusions
from dataforge_scheduler.core.timing import aware_utc, stored_utc
from dataforge_scheduler.errors import InvalidSchedule

__all__ = [
    "MAX_FIRE_TIMES",
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "InvalidSchedule",
    "ManualTrigger",
    "ScheduleLike",
    "Trigger",
    "WindowedTrigger",
    "fire_times",
    "trigger_for",
    "validate_cron",
    "validate_timezone",
]

MAX_FIRE_TIMES = 1000
"""The most fire times ``fire_times`` computes in one call (a preview, not a calendar)."""

_MICROSECOND = timedelta(microseconds=1)


@runtime_checkable
class Trigger(Protocol):
    """When a schedule fires.

    Invariants every implementation keeps: ``next_after(t)`` is strictly after ``t``, is
    aware UTC, depends on nothing but ``t`` and the trigger's own configuration (same
    input, same answer), and ``None`` means the trigger never fires again after ``t``.
    A naive ``t`` raises ``ValueError``.
    """

    def next_after(self, instant: datetime) -> datetime | None:
        """The first fire time strictly after ``instant``, or ``None``."""
        ...


class ScheduleLike(Protocol):
    """The attributes ``trigger_for`` reads; the ``ScheduledTask`` model has them."""

    @property
    def task_type(self) -> str: ...
    @property
    def cron_expression(self) -> str | None: ...
    @property
    def interval_seconds(self) -> int | None: ...
    @property
    def run_at(self) -> datetime | None: ...
    @property
    def timezone(self) -> str | None: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime | None: ...


def validate_timezone(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name; ``InvalidSchedule`` naming ``field`` otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidSchedule(
            f"{field} must be an IANA timezone name such as 'Asia/Shanghai', got {name!r}",
            field=field,
            value=name,
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidSchedule(
            f"{field} {name!r} is not a known IANA timezone (for example 'UTC', "
            "'Europe/London', 'Asia/Shanghai')",
            field=field,
            value=name,
        ) from exc


def validate_cron(expression: str) -> None:
    """Check a cron expression; ``InvalidSchedule(field="cron_expression")`` names the
    bad field and value, or says why the expression can never fire."""
    parse_cron(expression)


class CronTrigger:
    """Fires at the wall times a 5-field cron expression matches, in ``timezone``.

    A wall time skipped by a forward DST jump fires once at the first instant after the
    gap; a repeated wall time fires once, at its first occurrence.
    """

    __slots__ = ("_spec", "expression", "timezone")

    def __init__(self, expression: str, timezone: str | ZoneInfo = "UTC") -> None:
        self._spec: CronSpec = parse_cron(expression)
        self.expression = expression
        if isinstance(timezone, ZoneInfo):
            self.timezone = timezone
        else:
            self.timezone = validate_timezone(timezone)

    def next_after(self, instant: datetime) -> datetime | None:
        return next_fire(self._spec, self.timezone, aware_utc(instant))

    def __repr__(self) -> str:
        return f"CronTrigger({self.expression!r}, timezone={self.timezone.key!r})"


class IntervalTrigger:
    """Fires every ``seconds`` on a grid anchored at ``anchor``: anchor + k*seconds, k >= 1.

    The next fire is computed arithmetically from the anchor, so it never drifts however
    late a dispatch was.
    """

    __slots__ = ("_step", "anchor", "seconds")

    def __init__(self, seconds: int, anchor: datetime) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
            raise InvalidSchedule(
                f"interval_seconds must be a whole number of seconds greater than 0, "
                f"got {seconds!r}",
                field="interval_seconds",
                value=seconds,
            )
        try:
            self._step = timedelta(seconds=seconds)
        except OverflowError as exc:
            raise InvalidSchedule(
                f"interval_seconds {seconds} is too large", field="interval_seconds", value=seconds
            ) from exc
        self.seconds = seconds
        self.anchor = aware_utc(anchor, field="start_at")

    def next_after(self, instant: datetime) -> datetime | None:
        elapsed = aware_utc(instant) - self.anchor
        periods = max(elapsed // self._step + 1, 1)
        try:
            return self.anchor + periods * self._step
        except OverflowError:
            return None

    def __repr__(self) -> str:
        return f"IntervalTrigger({self.seconds}, anchor={self.anchor.isoformat()!r})"


class DateTrigger:
    """Fires once, at ``run_at``."""

    __slots__ = ("run_at",)

    def __init__(self, run_at: datetime) -> None:
        self.run_at = aware_utc(run_at, field="run_at")

    def next_after(self, instant: datetime) -> datetime | None:
        return self.run_at if self.run_at > aware_utc(instant) else None

    def __repr__(self) -> str:
        return f"DateTrigger({self.run_at.isoformat()!r})"


class ManualTrigger:
    """Never fires by itself; runs are started through the API ("run now")."""

    __slots__ = ()

    def next_after(self, instant: datetime) -> datetime | None:
        aware_utc(instant)
        return None

    def __repr__(self) -> str:
        return "ManualTrigger()"


class WindowedTrigger:
    """Bounds ``inner`` to ``[start_at, end_at]``: no fire before ``start_at`` (its first
    fire is the inner trigger's first at or after it) and none after ``end_at``."""

    __slots__ = ("end_at", "inner", "start_at")

    def __init__(
        self, inner: Trigger, *, start_at: datetime | None, end_at: datetime | None
    ) -> None:
        self.inner = inner
        self.start_at = None if start_at is None else aware_utc(start_at, field="start_at")
        self.end_at = None if end_at is None else aware_utc(end_at, field="end_at")
        if self.start_at is not None and self.end_at is not None and self.start_at >= self.end_at:
            raise InvalidSchedule(
                f"end_at {self.end_at.isoformat()} must be after start_at "
                f"{self.start_at.isoformat()}",
                field="end_at",
                value=end_at,
            )

    def next_after(self, instant: datetime) -> datetime | None:
        probe = aware_utc(instant)
        if self.end_at is not None and probe >= self.end_at:
            return None
        if self.start_at is not None and probe < self.start_at:
            probe = self.start_at - _MICROSECOND
        fire = self.inner.next_after(probe)
        if fire is None or (self.end_at is not None and fire > self.end_at):
            return None
        return fire

    def __repr__(self) -> str:
        start = None if self.start_at is None else self.start_at.isoformat()
        end = None if self.end_at is None else self.end_at.isoformat()
        return f"WindowedTrigger({self.inner!r}, start_at={start!r}, end_at={end!r})"


def _task_type(value: str) -> TaskType:
    try:
        return TaskType(value)
    except ValueError:
        allowed = ", ".join(t.value for t in TaskType)
        raise InvalidSchedule(
            f"task_type {value!r} is not one of {allowed}", field="task_type", value=value
        ) from None


def _stored(value: datetime | None) -> datetime | None:
    return None if value is None else stored_utc(value)


def _inner_trigger(task: ScheduleLike, kind: TaskType, zone: ZoneInfo) -> Trigger:
    if kind is TaskType.CRON:
        if task.cron_expression is None or not task.cron_expression.strip():
            raise InvalidSchedule(
                "a cron schedule needs a cron_expression", field="cron_expression", value=None
            )
        return CronTrigger(task.cron_expression, zone)
    if kind is TaskType.INTERVAL:
        if task.interval_seconds is None:
            raise InvalidSchedule(
                "an interval schedule needs interval_seconds", field="interval_seconds", value=None
            )
        anchor = _stored(task.start_at) or _stored(task.created_at)
        if anchor is None:
            raise InvalidSchedule(
                "an interval schedule needs an anchor for its grid: set start_at "
                "(created_at is used when it is absent)",
                field="start_at",
                value=None,
            )
        return IntervalTrigger(task.interval_seconds, anchor)
    if kind is TaskType.DATE:
        run_at = _stored(task.run_at)
        if run_at is None:
            raise InvalidSchedule("a date schedule needs run_at", field="run_at", value=None)
        return DateTrigger(run_at)
    return ManualTrigger()


def trigger_for(scheduled_task: ScheduleLike, default_timezone: str) -> Trigger:
    """The trigger a schedule row describes, windowed by its ``start_at``/``end_at``,
    without the slots its ``exclusions`` (when it has the attribute) keep out.

    The timezone is the row's, else ``default_timezone`` (validated either way). Naive
    datetimes on the row are read as UTC, because that is how they were stored.
    """
    kind = _task_type(scheduled_task.task_type)
    zone = validate_timezone(scheduled_task.timezone or default_timezone)
    inner = _inner_trigger(scheduled_task, kind, zone)
    if kind is TaskType.MANUAL:
        return inner
    start_at, end_at = _stored(scheduled_task.start_at), _stored(scheduled_task.end_at)
    if start_at is not None or end_at is not None:
        inner = WindowedTrigger(inner, start_at=start_at, end_at=end_at)
    windows = parse_exclusions(getattr(scheduled_task, "exclusions", None), zone)
    return ExcludingTrigger(inner, windows) if windows else inner


def fire_times(trigger: Trigger, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fires strictly after ``after`` (at most ``MAX_FIRE_TIMES``)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a whole number of 0 or more, got {count!r}")
    fires: list[datetime] = []
    cursor = aware_utc(after, field="after")
    for _ in range(min(count, MAX_FIRE_TIMES)):
        fire = trigger.next_after(cursor)
        if fire is None:
            break
        fires.append(fire)
        cursor = fire
    return fires
