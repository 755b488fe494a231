"""``NoticeWaiter``: the beat scheduler's sleep, cut short by a schedule-change notice.

Celery's beat loop sleeps with ``time.sleep`` between ticks, which nothing can wake, so
``DatabaseScheduler`` waits inside ``tick()`` instead (docs/internals.md §10).
The wait listens on the ``ChangeNotices`` port and, on PostgreSQL, on the database's own
``LISTEN`` (a trigger announces every change, raw SQL included), in slices of at most a
second so that ``close()`` from another thread is noticed promptly. When a source is
down it falls back to a plain timed wait and tries to listen again later: a lost notice
only delays a change until the next timed pass.

``close()`` never closes the listener under a wait in progress: Celery's SIGTERM handler
calls it in the middle of that wait (same thread), and a socket closed under redis-py's
read turns the handler's ``SystemExit`` into a connection error, so beat would keep
running. The wait closes the listener itself on its way out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from dataforge_scheduler.core.ports import NoticeListener

__all__ = ["NoticeWaiter"]

logger = logging.getLogger(__name__)


class _Source:
    """One place notices come from, with its own listener and back-off."""

    def __init__(self, listen: Callable[[], NoticeListener | None], relisten_after: float):
        self.listen = listen
        self.relisten_after = relisten_after
        self.listener: NoticeListener | None = None
        self.retry_at = 0.0

    def listener_or_none(self) -> NoticeListener | None:
        if self.listener is not None or time.monotonic() < self.retry_at:
            return self.listener
        try:
            self.listener = self.listen()
        except Exception as exc:  # the store is down or misconfigured: fall back to the timer
            self.retry_at = time.monotonic() + self.relisten_after
            logger.warning(
                "cannot listen for schedule changes (%s): changes are seen at the next "
                "timed pass; listening again in %.0f s",
                exc,
                self.relisten_after,
            )
            return None
        if self.listener is None:  # this store has no notices (SQLite): never ask again
            self.retry_at = float("inf")
        return self.listener

    def drop(self, *, retry_after: float) -> None:
        listener, self.listener = self.listener, None
        self.retry_at = time.monotonic() + retry_after
        if listener is not None:
            try:
                listener.close()
            except Exception:  # a broken connection may fail to close; nothing to keep
                logger.debug("closing the notice listener failed", exc_info=True)


class NoticeWaiter:
    """Waits up to a timeout, returning early on a notice from any source or on
    ``close()``.

    ``listen`` is one source or several (the schedule-change notices on Redis, and the
    database's own ``LISTEN``); a source may return None when it has no notices. With
    several listening, all but the last are looked at without blocking between short
    waits on the last (``poll_seconds``), so each wakes the scheduler within that time.
    """

    def __init__(
        self,
        listen: Callable[[], NoticeListener | None] | Sequence[Callable[[], NoticeListener | None]],
        *,
        slice_seconds: float = 1.0,
        relisten_after: float = 30.0,
        poll_seconds: float = 0.2,
    ) -> None:
        sources = [listen] if callable(listen) else list(listen)
        self._sources = [_Source(source, relisten_after) for source in sources]
        self._slice = slice_seconds
        self._poll = poll_seconds
        self._closed = threading.Event()
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
                self._drop_all()

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            step = min(remaining, self._slice)
            active = [
                (source, listener)
                for source in self._sources
                if (listener := source.listener_or_none()) is not None
            ]
            if not active:
                self._closed.wait(step)
                continue
            last = len(active) - 1
            for number, (source, listener) in enumerate(active):
                wait = step if last == 0 else (min(step, self._poll) if number == last else 0.0)
                try:
                    if listener.wait(wait):
                        logger.debug("woken by a schedule-change notice")
                        return True
                except Exception as exc:  # BackendUnavailable, or a listener closed under us
                    if self._closed.is_set():
                        return False
                    logger.warning("schedule-change notices interrupted: %s", exc)
                    with self._mutex:
                        source.drop(retry_after=1.0)
        return False

    def close(self) -> None:
        """End any wait and stop listening; safe to call twice, from any thread (and
        from a signal handler that interrupted a wait)."""
        self._closed.set()
        with self._mutex:
            idle = self._waiting == 0
        if idle:
            self._drop_all()

    def _drop_all(self) -> None:
        with self._mutex:
            for source in self._sources:
                source.drop(retry_after=0.0)
