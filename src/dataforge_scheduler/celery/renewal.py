"""Keeping a run's lock: the per-process renewer thread, each run's watchdog on it, and
the release a run retries when it ended while Redis was unreachable.

One ``LockRenewer`` per process (rebuilt in a forked child) serves every run: a
``LockWatchdog`` extends its run's lock every TTL/3 and notes in the run's own log, once,
that the lock was lost (force-released or expired); a ``DeferredRelease`` frees the lock
of a run that ended while Redis was down as soon as Redis answers again.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Protocol

from dataforge_scheduler.core.context import RunContext
from dataforge_scheduler.core.ports import LockManager
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError, LockLost

__all__ = ["DeferredRelease", "LockRenewer", "LockWatchdog", "default_renewer"]

logger = logging.getLogger(__name__)


class LockWatchdog:
    """Renews one run's lock every TTL/3 until stopped, on the process's ``LockRenewer``
    (one thread per process for every run, not one per run)."""

    def __init__(self, run: RunContext, *, renewer: LockRenewer | None = None) -> None:
        if run.state.lock is None:
            raise ConfigurationError("LockWatchdog needs a run that holds a lock", field="lock")
        self._run = run
        self._hold = run.state.lock
        self._renewer = renewer or default_renewer()
        self.interval = max(self._hold.ttl / 3, 0.05)

    def start(self) -> LockWatchdog:
        self._renewer.add(self)
        return self

    def stop(self) -> None:
        """Stop renewing; returns at once (an extend in flight finishes on its own)."""
        self._renewer.discard(self)

    def renew(self) -> bool:
        """Extend the lock once; False when it is gone (then stop renewing it)."""
        hold = self._hold
        try:
            self._run.runtime.locks.extend(hold.scope, hold.token, ttl=hold.ttl)
        except LockLost:
            if self._renewer.holds(self):
                logger.error(
                    "the lock %s of run %s was lost while it ran (expired or "
                    "force-released); another run may start",
                    hold.scope,
                    self._run.celery_task_id,
                )
                if self._run.log is not None:  # the run's own history says so too
                    self._run.log.write(
                        [
                            f"! the lock {hold.scope} was lost while this run went on "
                            "(expired or force-released): another run of this schedule "
                            "may start"
                        ]
                    )
                hold.lost = True  # extend_lock() raises LockLost from now on
            return False
        except Exception:
            logger.warning(
                "could not renew the lock %s of run %s; retrying in %.1f s",
                hold.scope,
                self._run.celery_task_id,
                self.interval,
                exc_info=True,
            )
        return True


class _Renewal(Protocol):
    """What the renewer runs when due: a lock's renewal, or a release it retries."""

    interval: float

    def renew(self) -> bool:
        """Do it once; False when there is nothing more to do."""
        ...


class DeferredRelease:
    """Frees a run's lock once Redis answers again: the run ended while Redis was
    unreachable, so its lock would otherwise block the next runs until its TTL."""

    interval = 1.0

    def __init__(self, locks: LockManager, scope: str, token: str, *, ttl: float) -> None:
        self._locks = locks
        self._scope = scope
        self._token = token
        self._until = time.monotonic() + ttl

    def renew(self) -> bool:
        if time.monotonic() >= self._until:
            return False  # expired by now: nothing left to free
        try:
            if self._locks.release(self._scope, self._token):
                logger.info("released lock %s once Redis answered again", self._scope)
        except BackendUnavailable:
            return True
        except Exception:
            logger.warning("could not release lock %s", self._scope, exc_info=True)
        return False


class LockRenewer:
    """One daemon thread per process renewing every watched lock when it is due (and
    retrying the release of a lock a run could not free).

    It sleeps until the earliest renewal, or, with nothing watched, one more interval
    (runs come and go) and then until a watch wakes it. A new watch wakes it only when
    due before that, so a busy process starts and ends runs with no thread and no
    wake-up each. Rebuilt in a forked child, where the parent's thread does not exist.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[_Renewal, float] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._wake_at = math.inf  # when the thread's current wait ends
        self._idle_tick = 0.0  # the last watch's interval: the wait with nothing watched

    def add(self, watch: _Renewal) -> None:
        with self._cond:
            self._check_fork()
            due = time.monotonic() + watch.interval
            self._due[watch] = due
            self._idle_tick = watch.interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="dataforge-lock-renewer", daemon=True
                )
                self._thread.start()
            elif due < self._wake_at:
                self._cond.notify_all()

    def discard(self, watch: _Renewal) -> None:
        with self._cond:
            self._due.pop(watch, None)

    def holds(self, watch: _Renewal) -> bool:
        with self._cond:
            return watch in self._due

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._due = {}
            self._thread = None
            self._wake_at = math.inf

    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            with self._cond:
                now = time.monotonic()
                due = [watch for watch, at in self._due.items() if at <= now]
                if not due:
                    if self._due:
                        idle_since = None
                        self._wake_at = min(self._due.values())
                    elif idle_since is None:
                        idle_since = now
                        self._wake_at = now + self._idle_tick
                    else:
                        idle_since = None
                        self._wake_at = math.inf
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    self._wake_at = math.inf
                    continue
            for watch in due:
                keep = watch.renew()
                with self._cond:
                    if watch in self._due:
                        if keep:
                            self._due[watch] = time.monotonic() + watch.interval
                        else:
                            del self._due[watch]


_renewer: list[LockRenewer] = []
_renewer_lock = threading.Lock()


def default_renewer() -> LockRenewer:
    """The process's renewer (created on first use)."""
    with _renewer_lock:
        if not _renewer:
            _renewer.append(LockRenewer())
        return _renewer[0]


def _forget_renewer() -> None:
    # a parent thread may have held either lock at fork time: the child gets fresh ones
    global _renewer_lock
    _renewer_lock = threading.Lock()
    for renewer in _renewer:
        renewer._cond = threading.Condition()
        renewer._check_fork()


os.register_at_fork(after_in_child=_forget_renewer)
