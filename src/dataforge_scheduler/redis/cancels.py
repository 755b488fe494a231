"""``RedisCancelNotes``: why a run was cancelled, kept in one Redis string per run until
its TTL runs out: the worker that records the run ``revoked`` reads it."""

from __future__ import annotations

import redis

from dataforge_scheduler.core.ports import CANCEL_NOTE_TTL_SECONDS
from dataforge_scheduler.redis.connection import backend_errors
from dataforge_scheduler.redis.keys import Keys

__all__ = ["RedisCancelNotes"]


class RedisCancelNotes:
    """The ``CancelNotes`` port on Redis (see the Protocol for the invariants)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    def note(self, celery_task_id: str, reason: str) -> None:
        with backend_errors("noting why a run is cancelled"):
            self._client.set(
                self._keys.cancel(celery_task_id), reason.encode(), ex=CANCEL_NOTE_TTL_SECONDS
            )

    def reason(self, celery_task_id: str) -> str | None:
        with backend_errors("reading why a run was cancelled"):
            value = self._client.get(self._keys.cancel(celery_task_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
