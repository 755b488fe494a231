"""The clock: aware UTC time, injectable where tests need to move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "ensure_utc", "utcnow"]


def utcnow() -> datetime:
    """The current instant as an aware UTC datetime."""
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` as aware UTC; a naive value is taken to be UTC already.

    SQLite hands back naive datetimes for ``DateTime(timezone=True)`` columns; everything
    the library stores is UTC, so reading them as UTC is exact.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Clock(Protocol):
    """Something that tells the time."""

    def now(self) -> datetime:
        """The current instant, aware UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return utcnow()


class ManualClock:
    """A clock that moves only when told to (tests, the plugin's scheduler fixture)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = ensure_utc(start) if start is not None else utcnow()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds) and return the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("ManualClock only moves forward")
        self._now += step
        return self._now

    def set(self, instant: datetime) -> datetime:
        """Jump to ``instant`` (aware, not earlier than now)."""
        target = ensure_utc(instant)
        if target < self._now:
            raise ValueError("ManualClock only moves forward")
        self._now = target
        return self._now
