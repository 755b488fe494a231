"""``SchedulerDriver``: the real ``DatabaseScheduler`` on a clock the test moves.

Each ``tick()`` is one ``run_pass(clock.now())``: the scheduler claims what is due in
the database (a ``pending`` execution row per slot, ``next_run_at`` advanced by the
trigger and the misfire policy) and sends it through a ``RecordingDispatcher``, which
keeps each message (and each cancel) instead of publishing it (the same double this
project's own tests use; it passes the ``Dispatcher`` contract suite). ``advance()``
moves the clock and ticks at every ``next_run_at`` on the way, so a long jump fires each
slot on time, as a beat that never slept would, instead of turning them into one
misfire; use ``clock.set()`` then ``tick()`` to see the misfire policy at work after downtime.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dataforge_scheduler.celery.beat import DatabaseScheduler
from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.messages import SLOT, RunMessage
from dataforge_scheduler.core.messages import message_for as default_message
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.core.timing import aware_utc
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError
from dataforge_scheduler.runtime import Runtime

__all__ = ["RecordingDispatcher", "SchedulerDriver", "SentTask"]

#: Most passes one ``advance()`` may make (each due time is one); past it, move in steps.
MAX_TICKS = 10_000


@dataclass(frozen=True)
class SentTask:
    """One run the scheduler sent: what a worker would have received."""

    task_name: str
    kwargs: dict[str, Any]
    task_id: str
    headers: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def slot(self) -> datetime | None:
        """The slot (aware UTC) this run was claimed for; None for a send without one."""
        value = self.headers.get(SLOT)
        return aware_utc(datetime.fromisoformat(value)) if isinstance(value, str) else None

    @property
    def scheduled_task_id(self) -> int | None:
        value = self.kwargs.get("scheduled_task_id")
        return value if isinstance(value, int) else None

    def slot_in(self, timezone: str) -> datetime | None:
        """The slot as wall time in ``timezone`` (e.g. ``"Asia/Shanghai"``)."""
        slot = self.slot
        return None if slot is None else slot.astimezone(ZoneInfo(timezone))


class RecordingDispatcher:
    """A ``Dispatcher`` that records each message and publishes nothing.

    Set ``down`` to make it refuse every run as a broker that cannot be reached does
    (``BackendUnavailable``, nothing recorded), to test what a host does then.
    """

    def __init__(self) -> None:
        self.sent: list[SentTask] = []
        self.cancelled: list[str] = []  # Celery task ids, in the order cancelled
        self.cancel_signals: list[str] = []  # the signal of each, in the same order
        self.down = False
        self._lock = threading.Lock()

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        return default_message(run)

    def dispatch(self, run: ClaimedSlot) -> RunMessage:
        if self.down:
            raise BackendUnavailable(
                f"could not send task {run.task_name!r} (id {run.celery_task_id}): the broker "
                "is down (RecordingDispatcher.down)",
                backend="broker",
            )
        message = self.message_for(run)
        record = SentTask(
            message.task_name,
            dict(message.kwargs),
            message.task_id,
            dict(message.headers),
            dict(message.options),
        )
        with self._lock:
            self.sent.append(record)
        return message

    def cancel(self, celery_task_ids: Sequence[str], *, signal: str = "SIGTERM") -> None:
        if not celery_task_ids:
            return
        if self.down:
            raise BackendUnavailable(
                f"could not revoke run(s) {', '.join(celery_task_ids)}: the broker is down "
                "(RecordingDispatcher.down)",
                backend="broker",
            )
        with self._lock:
            self.cancelled.extend(celery_task_ids)
            self.cancel_signals.extend(signal for _ in celery_task_ids)


class SchedulerDriver:
    """Drives a ``DatabaseScheduler`` pass by pass on a ``ManualClock``."""

    def __init__(self, app: Any, runtime: Runtime, clock: ManualClock) -> None:
        self.clock = clock
        self.dispatcher = RecordingDispatcher()
        self.scheduler = DatabaseScheduler(
            app, runtime=runtime, clock=clock, dispatcher=self.dispatcher
        )
        self._next_run_at: datetime | None = None

    @property
    def sent(self) -> list[SentTask]:
        """Every send so far, oldest first."""
        return list(self.dispatcher.sent)

    def tick(self) -> list[SentTask]:
        """One pass at the clock's time (more while a pass fills its batch); the sends."""
        before = len(self.dispatcher.sent)
        for _ in range(MAX_TICKS):
            result = self.scheduler.run_pass(self.clock.now())
            self._next_run_at = result.next_run_at
            if not result.batch_full:
                break
        return self.dispatcher.sent[before:]

    def advance(self, delta: timedelta | float) -> list[SentTask]:
        """Move the clock by ``delta`` (a timedelta or seconds), ticking at each due
        time on the way and at the end; return the sends, oldest first."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self.advance_to(self.clock.now() + step)

    def advance_to(self, instant: datetime) -> list[SentTask]:
        """Like ``advance``, up to the aware ``instant``."""
        target = aware_utc(instant, field="instant")
        sent = self.tick()
        for _ in range(MAX_TICKS):
            due = self._next_run_at
            if due is None or due > target:
                break
            if due > self.clock.now():
                self.clock.set(due)
            sent += self.tick()
        else:
            raise ConfigurationError(
                f"advance_to({target.isoformat()}) needed more than {MAX_TICKS} passes: "
                "move the clock in smaller steps",
                field="instant",
                value=target,
            )
        if target > self.clock.now():
            self.clock.set(target)
            sent += self.tick()
        return sent

    def close(self) -> None:
        self.scheduler.close()
