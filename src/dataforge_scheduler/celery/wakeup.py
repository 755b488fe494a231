"""``NoticeWaiter``: the beat scheduler's sleep, cut short by a schedule-change notice.

Celery's beat loop sleeps with ``time.sleep`` between ticks, which nothing can wake, so
``DatabaseScheduler`` waits inside ``tick()`` instead (docs/internals.md §10).
The wait listens on the ``ChangeNotices`` port, in slices of at most a second so that
``close()`` from another thread is noticed promptly. When the notices backend is down it
falls back to a plain timed wait and tries to listen again later: a lost notice only
delays a change until the next timed pass.

``close()`` never closes the listener under a wait in progress: Celery's SIGTERM handler
calls it in the middle of that wait (same thread), and a socket closed under redis-py's
read turns the handler's ``SystemExit`` into a connection error, so beat would keep
running. The wait closes the listener itself on its way out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dataforge_scheduler.core.ports import NoticeListener

__all__ = ["NoticeWaiter"]

logger = logging.getLogger(__name__)


class NoticeWaiter:
    """Waits up to a timeout, returning early on a notice or on ``close()``."""

    def __init__(
        self,
        listen: Callable[[], NoticeListener],
        *,
        slice_seconds: float = 1.0,
        relisten_after: float = 30.0,
    ) -> None:
        self._listen = listen
        self._slice = slice_seconds
        self._relisten_after = relisten_after
        self._closed = threading.Event()
        self._listener: NoticeListener | None = None
        self._retry_at = 0.0
        self._mutex = threading.Lock()
        self._waiting = 0

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True when a schedule-change notice ended the wait."""
        with self._mutex:
            self._waiting += 1
        try:
            return self._wait(timeout)
        finally:
            with self._mutex:
                self._waiting -= 1
                idle = self._waiting == 0
            if idle and self._closed.is_set():
                self._drop(retry_after=0.0)

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            step = min(remaining, self._slice)
            listener = self._listener_or_none()
            if listener is None:
                self._closed.wait(step)
                continue
            try:
                if listener.wait(step):
                    logger.debug("woken by a schedule-change notice")
                    return True
            except Exception as exc:  # BackendUnavailable, or a listener closed under us
                if self._closed.is_set():
                    return False
                logger.warning("schedule-change notices interrupted: %s", exc)
                self._drop(retry_after=1.0)
        return False

    def close(self) -> None:
        """End any wait and stop listening; safe to call twice, from any thread (and
        from a signal handler that interrupted a wait)."""
        self._closed.set()
        with self._mutex:
            idle = self._waiting == 0
        if idle:
            self._drop(retry_after=0.0)

    def _listener_or_none(self) -> NoticeListener | None:
        if self._listener is not None or time.monotonic() < self._retry_at:
            return self._listener
        try:
            self._listener = self._listen()
        except Exception as exc:  # Redis down or misconfigured: fall back to the timer
            self._retry_at = time.monotonic() + self._relisten_after
            logger.warning(
                "cannot listen for schedule changes (%s): changes are seen at the next "
                "timed pass; listening again in %.0f s",
                exc,
                self._relisten_after,
            )
        return self._listener

    def _drop(self, *, retry_after: float) -> None:
        with self._mutex:
            listener, self._listener = self._listener, None
            self._retry_at = time.monotonic() + retry_after
        if listener is not None:
            try:
                listener.close()
            except Exception:  # a broken connection may fail to close; nothing to keep
                logger.debug("closing the notice listener failed", exc_info=True)
