"""``MemoryRunJournal``: the ``RunJournal`` port in one process, for the demo and fixtures.

The outbox is an ordered dict of records with, per consumer, the records it read and has
not acknowledged (and when it read them, so ``claim`` can take them after ``idle``
seconds). A run's start and end are one critical section each over the run states, the
backend's ``MemoryLockManager`` and its ``MemoryLogBus``, as the Redis twin is one Lua
script. Time comes from the injected clock, except the ``read`` wait, which is real.
"""

from __future__ import annotations

import builtins
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.core.journal import (
    FinishRecord,
    LockEnd,
    LockEndAction,
    LockRequest,
    OutboxEntry,
    OutboxStats,
    StartOutcome,
    StartRecord,
)
from dataforge_scheduler.core.values import Acquired, ttl_milliseconds
from dataforge_scheduler.errors import LockLost
from dataforge_scheduler.memory.locks import MemoryLockManager
from dataforge_scheduler.memory.logbus import MemoryLogBus

__all__ = ["MemoryRunJournal"]

_SWEEP_EVERY = 1000  # appends between sweeps of expired run states


@dataclass
class _RunState:
    state: str
    attempt: int
    undrained: int
    expires_at: datetime
    keep: timedelta | None = None  # a done ttl, applied when nothing is left undrained


@dataclass
class _Delivery:
    consumer: str
    at: datetime


class MemoryRunJournal:
    """The ``RunJournal`` port in memory (see the Protocol for the invariants)."""

    def __init__(self, *, locks: MemoryLockManager, logbus: MemoryLogBus, clock: Clock) -> None:
        self._locks = locks
        self._logbus = logbus
        self._clock = clock
        self._changed = threading.Condition()
        self._runs: dict[str, _RunState] = {}
        self._entries: dict[str, OutboxEntry] = {}
        self._delivered: dict[str, _Delivery] = {}
        self._appended: dict[str, datetime] = {}
        self._ids = itertools.count(1)
        self._sweeps = itertools.count(1)
        self.rejected: builtins.list[tuple[OutboxEntry, str]] = []

    # ------------------------------------------------------------ a run's steps

    def start(
        self, record: StartRecord, *, lock: LockRequest | None, state_ttl: float
    ) -> StartOutcome:
        with self._changed:
            now = self._clock.now()
            known = self._live(record.celery_task_id, now)
            if known is not None and not _startable(known, record):
                return StartOutcome(duplicate=True)
            outcome = StartOutcome()
            if lock is not None:
                taken = self._locks.acquire(lock.scope, lock.owner, ttl=lock.ttl)
                outcome = (
                    StartOutcome(acquired=taken)
                    if isinstance(taken, Acquired)
                    else StartOutcome(holder=taken)
                )
            undrained = known.undrained if known is not None else 0
            self._runs[record.celery_task_id] = _RunState(
                "running", record.retries, undrained, now + _ttl(state_ttl)
            )
            self._append(record)
            return outcome

    def finish(
        self,
        record: FinishRecord,
        *,
        log_lines: Sequence[str],
        log_ttl: float,
        lock: LockEnd | None,
        state_ttl: float,
        done_ttl: float | None = None,
    ) -> bool:
        run = record.celery_task_id
        with self._changed:
            if log_lines:
                self._logbus.append(run, log_lines)
            if record.final:
                self._logbus.finish(run, record.status.value, ttl=log_ttl)
            acted = self._end_lock(lock) if lock is not None else False
            now = self._clock.now()
            known = self._live(run, now)
            state = known or _RunState("running", record.attempt or 0, 0, now)
            if record.attempt is None or state.attempt == record.attempt:
                if record.final:
                    state.state = "done"
                    if done_ttl is not None:
                        state.keep = _ttl(done_ttl)
                elif record.status.value == "retrying" and record.attempt is not None:
                    state.state, state.attempt = "retrying", record.attempt + 1
            state.expires_at = now + _ttl(state_ttl)
            self._runs[run] = state
            self._append(record)
            return acted

    def _end_lock(self, lock: LockEnd) -> bool:
        if lock.action is LockEndAction.RELEASE:
            return self._locks.release(lock.scope, lock.key)
        if lock.action is LockEndAction.RELEASE_FOR_TASK:
            return self._locks.release_for_task(lock.scope, lock.key)
        try:
            self._locks.extend(lock.scope, lock.key, ttl=lock.ttl or 1.0)
        except LockLost:
            return False
        return True

    def _append(self, record: StartRecord | FinishRecord) -> None:
        """Append under the condition; count the record on its run; wake readers."""
        entry_id = f"{next(self._ids)}-0"
        self._entries[entry_id] = OutboxEntry(entry_id=entry_id, record=record)
        self._appended[entry_id] = self._clock.now()
        self._runs[record.celery_task_id].undrained += 1
        if next(self._sweeps) % _SWEEP_EVERY == 0:
            self._forget_expired()
        self._changed.notify_all()

    def _forget_expired(self) -> None:
        """Drop every run state past its TTL (a long-lived process must not grow)."""
        now = self._clock.now()
        for run in [run for run, state in self._runs.items() if state.expires_at <= now]:
            del self._runs[run]

    # ------------------------------------------------------------ the writers' side

    def read(self, consumer: str, *, count: int, block: float) -> builtins.list[OutboxEntry]:
        deadline = time.monotonic() + max(0.0, block)
        with self._changed:
            while True:
                fresh = [e for key, e in self._entries.items() if key not in self._delivered]
                if fresh or time.monotonic() >= deadline:
                    break
                self._changed.wait(deadline - time.monotonic())
            taken = fresh[:count]
            now = self._clock.now()
            for entry in taken:
                self._delivered[entry.entry_id] = _Delivery(consumer, now)
            return taken

    def pending(self, consumer: str, *, count: int) -> builtins.list[OutboxEntry]:
        with self._changed:
            mine = [
                self._entries[key]
                for key, delivery in self._delivered.items()
                if delivery.consumer == consumer and key in self._entries
            ]
            return mine[:count]

    def claim(self, consumer: str, *, idle: float, count: int) -> builtins.list[OutboxEntry]:
        with self._changed:
            now = self._clock.now()
            stale = [
                key
                for key, delivery in self._delivered.items()
                if delivery.consumer != consumer and now - delivery.at >= timedelta(seconds=idle)
            ][:count]
            for key in stale:
                self._delivered[key] = _Delivery(consumer, now)
            return [self._entries[key] for key in stale if key in self._entries]

    def ack(self, entries: Sequence[OutboxEntry]) -> None:
        with self._changed:
            for entry in entries:
                if self._entries.pop(entry.entry_id, None) is None:
                    continue
                self._delivered.pop(entry.entry_id, None)
                self._appended.pop(entry.entry_id, None)
                state = self._live(entry.record.celery_task_id, self._clock.now())
                if state is not None:
                    state.undrained = max(0, state.undrained - 1)
                    if state.undrained == 0 and state.keep is not None:
                        state.expires_at = self._clock.now() + state.keep

    def reject(self, entry: OutboxEntry, reason: str) -> None:
        with self._changed:
            self.rejected.append((entry, reason))
        self.ack([entry])

    def undrained(self, celery_task_ids: Sequence[str]) -> set[str]:
        with self._changed:
            return {
                run
                for run in celery_task_ids
                if (state := self._runs.get(run)) is not None and state.undrained > 0
            }

    def stats(self) -> OutboxStats:
        with self._changed:
            return OutboxStats(
                length=len(self._entries),
                in_flight=sum(1 for key in self._delivered if key in self._entries),
                oldest_age_seconds=None if not self._entries else self._oldest_age(),
            )

    def clear(self) -> int:
        """Forget every record and run state (test clean-up); how many records there were."""
        with self._changed:
            count = len(self._entries)
            self._entries.clear()
            self._delivered.clear()
            self._runs.clear()
            self._appended.clear()
        return count

    # ------------------------------------------------------------ helpers

    def _oldest_age(self) -> float:
        first = self._appended[next(iter(self._entries))]
        return max(0.0, (self._clock.now() - first).total_seconds())

    def _live(self, run: str, now: datetime) -> _RunState | None:
        state = self._runs.get(run)
        if state is not None and state.expires_at <= now:
            del self._runs[run]
            return None
        return state


def _startable(known: _RunState, record: StartRecord) -> bool:
    return (
        (known.state == "retrying" and known.attempt == record.retries)
        or (known.state == "running" and known.attempt < record.retries)
        or (record.redelivered and known.state == "running" and known.attempt == record.retries)
    )


def _ttl(seconds: float) -> timedelta:
    return timedelta(milliseconds=ttl_milliseconds(seconds))
