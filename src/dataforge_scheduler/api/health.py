"""``HealthProbe``: what ``GET /health`` reports, cheap to ask often.

``/health`` needs no key, so anyone can call it as often as they like. The probe keeps
that from reaching the database and Redis on every call:

- one check at a time (single flight): concurrent callers wait for the check already
  running instead of starting their own;
- its answer is kept ``cache_seconds`` (2 s): a flood of probes makes one check per
  interval;
- the check runs on the probe's own thread, never on the thread pool the other
  handlers use, so a slow backend cannot starve them;
- a check that takes longer than ``timeout_seconds`` (3 s) answers "timeout" for what
  has not answered (503); the thread finishes on its own, and no second one starts
  meanwhile;
- a backend's failure is logged when its state changes, and then at most once a minute.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_CACHE_SECONDS", "DEFAULT_TIMEOUT_SECONDS", "HealthProbe", "HealthReport"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_SECONDS = 2.0
DEFAULT_TIMEOUT_SECONDS = 3.0
#: A backend still failing is logged again after this many seconds.
WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class HealthReport:
    """Each backend's state as the public endpoint tells it (``ok…``, ``unreachable`` or
    ``timeout``); the driver's error (hosts, ports, users) goes to the log only."""

    database: str
    redis: str
    outbox: Any = None  # the history outbox's stats, when Redis answered

    @property
    def healthy(self) -> bool:
        return self.database.startswith("ok") and self.redis.startswith("ok")


class HealthProbe:
    """Single-flight, cached, time-bounded backend checks (see the module docstring).

    ``check`` is the blocking check (``Runtime.check``): ``{"database": ..., "redis":
    ...}`` with ``ok…`` or the error text.
    """

    def __init__(
        self,
        check: Callable[[], dict[str, Any]],
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self.cache_seconds = cache_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="dataforge-health"
        )
        # a thread lock and a concurrent future: the app may serve several event loops
        self._mutex = threading.Lock()
        self._cached: tuple[float, HealthReport] | None = None
        self._pending: concurrent.futures.Future[HealthReport] | None = None
        self._warned: dict[str, tuple[str, float]] = {}
        self.checks = 0  # how many checks reached the backends

    async def report(self) -> HealthReport:
        with self._mutex:
            cached = self._cached
            if cached is not None and self._clock() - cached[0] < self.cache_seconds:
                return cached[1]
            if self._pending is None or self._pending.done():
                self.checks += 1
                self._pending = self._executor.submit(self._run)
            pending = self._pending
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(pending)), self.timeout_seconds
            )
        except TimeoutError:
            self._warn("the backend check", f"took more than {self.timeout_seconds:.1f} s")
            # not cached: the next call waits on the same check until it ends
            return HealthReport(database="timeout", redis="timeout")

    def _run(self) -> HealthReport:
        """One check, on the probe's thread; its answer is cached as soon as it ends."""
        report = self._public(self._check())
        with self._mutex:
            self._cached = (self._clock(), report)
        return report

    def _public(self, raw: dict[str, Any]) -> HealthReport:
        return HealthReport(
            database=self._state("the database", raw.get("database")),
            redis=self._state("Redis", raw.get("redis")),
            outbox=raw.get("outbox"),
        )

    def _state(self, backend: str, state: str | None) -> str:
        if state is not None and state.startswith("ok"):
            with self._mutex:
                self._warned.pop(backend, None)
            return state
        self._warn(backend, f"is unreachable: {state or 'no answer'}")
        return "unreachable"

    def _warn(self, what: str, detail: str) -> None:
        """Log ``what``'s failure when it changes, then at most once a minute."""
        with self._mutex:
            last = self._warned.get(what)
            now = self._clock()
            if last is not None and last[0] == detail and now - last[1] < WARN_EVERY_SECONDS:
                return
            self._warned[what] = (detail, now)
        logger.warning("health: %s %s", what, detail)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
