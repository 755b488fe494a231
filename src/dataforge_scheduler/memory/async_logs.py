"""``PollingAsyncLogFeed``: async subscriptions over a sync ``LogBus`` (the memory twin).

The in-process ``MemoryLogBus`` delivers live events to a queue that ``get(0)`` reads
without blocking, so the async side polls it with short ``asyncio.sleep`` pauses rather
than parking a thread per SSE stream. Used by the API when ``redis_url`` is
``memory://`` (the embedded demo and host fixtures); it has the same ``subscribe`` /
``get`` / ``close`` shape as ``redis.async_logs.RedisAsyncLogFeed``.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self

from dataforge_scheduler.core.ports import LogBus, LogEnd, LogLine, LogSubscription

__all__ = ["PollingAsyncLogFeed", "PollingAsyncLogSubscription"]

DEFAULT_POLL_INTERVAL = 0.02


class PollingAsyncLogFeed:
    """Async subscriptions to a ``LogBus`` whose ``subscribe`` and ``get(0)`` are cheap."""

    def __init__(self, bus: LogBus, *, poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self._bus = bus
        self._poll_interval = poll_interval

    async def subscribe(self, run_id: str) -> PollingAsyncLogSubscription:
        """A subscription to ``run_id``'s log, active when this returns."""
        return PollingAsyncLogSubscription(
            self._bus.subscribe(run_id), poll_interval=self._poll_interval
        )


class PollingAsyncLogSubscription:
    """Wraps a sync ``LogSubscription``; ``get`` polls it without blocking the loop."""

    def __init__(self, subscription: LogSubscription, *, poll_interval: float) -> None:
        self._subscription = subscription
        self._poll_interval = poll_interval

    async def get(self, wait: float) -> LogLine | LogEnd | None:
        """The next line or end event, waiting up to ``wait`` seconds; None if none came."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            event = self._subscription.get(0)
            if event is not None:
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(self._poll_interval, remaining))

    async def close(self) -> None:
        """Unsubscribe; idempotent."""
        self._subscription.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
