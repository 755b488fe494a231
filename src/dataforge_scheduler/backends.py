"""The one place that chooses a backend: ``redis_url`` to the roles behind the ports.

``memory://`` gives the in-process twins (``memory.backend.MemoryBackend``: the embedded
demo and host-app fixtures); any other URL gives Redis (``redis.backend.RedisBackend``).
Both implement ``core.ports.Backend`` and pass the same contract suites, so nothing
above this module asks which one it got.
"""

from __future__ import annotations

from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.core.ports import Backend
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.settings import Settings

__all__ = ["MEMORY_URL", "open_backend"]

MEMORY_URL = "memory://"


def open_backend(settings: Settings, *, clock: Clock) -> Backend:
    """The backend for ``settings.effective_redis_url`` (nothing connects yet)."""
    url = settings.effective_redis_url
    keys = Keys(settings.key_prefix)
    if url.startswith(MEMORY_URL):
        from dataforge_scheduler.memory.backend import MemoryBackend

        return MemoryBackend(clock=clock, lock_key=keys.lock)
    from dataforge_scheduler.redis.backend import RedisBackend

    return RedisBackend(url, keys=keys, clock=clock)
