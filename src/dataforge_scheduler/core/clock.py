"""The clock: aware UTC time, injectable where tests need to move it.

What counts as an aware instant, and how a naive one is treated, is ``core.timing``'s
rule; this module only tells the time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from dataforge_scheduler.core.timing import aware_utc

__all__ = ["Clock", "ManualClock", "ServerClock", "SystemClock", "utcnow"]


def utcnow() -> datetime:
    """The current instant as an aware UTC datetime."""
    return datetime.now(UTC)


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
        self._now = aware_utc(start, field="start") if start is not None else utcnow()

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
        target = aware_utc(instant, field="instant")
        if target < self._now:
            raise ValueError("ManualClock only moves forward")
        self._now = target
        return self._now


class ServerClock:
    """Another host's time (the database server's), read through this host's clock: the
    offset measured by the latest ``observe`` added to ``utcnow()``. A real beat keeps
    one, refreshed by every pass, so a host whose clock is wrong neither fires early
    nor late. Before the first observation it is this host's time."""

    def __init__(self) -> None:
        self._offset = timedelta(0)

    @property
    def offset(self) -> timedelta:
        """How far the other host's clock is ahead of this one's."""
        return self._offset

    def observe(self, server_now: datetime, *, asked_at: datetime, answered_at: datetime) -> None:
        """Take ``server_now``, read between ``asked_at`` and ``answered_at`` (this host's
        time), as the server's time at the middle of that round trip."""
        self._offset = server_now - (asked_at + (answered_at - asked_at) / 2)

    def now(self) -> datetime:
        return utcnow() + self._offset
