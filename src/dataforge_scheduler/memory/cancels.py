"""``MemoryCancelNotes``: why a run was cancelled, between threads of one process."""

from __future__ import annotations

import threading

from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.core.ports import CANCEL_NOTE_TTL_SECONDS

__all__ = ["MemoryCancelNotes"]


class MemoryCancelNotes:
    """The ``CancelNotes`` port in memory (see the Protocol for the invariants). Notes
    expire after ``CANCEL_NOTE_TTL_SECONDS`` by the runtime's clock."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._notes: dict[str, tuple[str, float]] = {}

    def note(self, celery_task_id: str, reason: str) -> None:
        now = self._clock.now().timestamp()
        with self._mutex:
            self._notes = {k: v for k, v in self._notes.items() if v[1] > now}
            self._notes[celery_task_id] = (reason, now + CANCEL_NOTE_TTL_SECONDS)

    def reason(self, celery_task_id: str) -> str | None:
        with self._mutex:
            found = self._notes.get(celery_task_id)
        if found is None or found[1] <= self._clock.now().timestamp():
            return None
        return found[0]

    def clear(self) -> int:
        """Forget every note (the backend's ``purge``); how many there were."""
        with self._mutex:
            count, self._notes = len(self._notes), {}
        return count
