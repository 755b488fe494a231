"""Batching of a run's ``task_log`` lines into the log bus, and the per-process flusher.

A ``LogBuffer`` belongs to one run. Lines are queued and pushed to the ``LogBus`` in
batches (one round trip per batch): when ``flush_lines`` are waiting, on the flusher's
timer (``log_flush_interval``), and when the run ends (``close``). It also keeps the
run's own copy of the log for ``task_executions.log_output``, capped at ``max_bytes``
with a visible marker; past the cap, lines are no longer pushed either (one marker line
tells live readers). A backend failure never reaches the task: the batch is dropped from
the live stream (it stays in the run's copy) and the failure is logged once per run.

``LogFlusher`` is one daemon thread per process serving every live buffer. It starts on
first use and is rebuilt in a forked child (Celery's prefork pool forks after imports),
where the parent's thread does not exist.
"""

from __future__ import annotations

import logging
import os
import threading

from dataforge_scheduler.core.ports import LogBus
from dataforge_scheduler.core.values import truncation_marker

__all__ = ["LogBuffer", "LogFlusher", "default_flusher"]

_LIVE_CUT_LINE = "… [log truncated: further lines are not stored]"

logger = logging.getLogger(__name__)


class LogBuffer:
    """One run's log lines on their way to the bus (thread-safe; see the module doc)."""

    def __init__(
        self,
        bus: LogBus,
        run_id: str,
        *,
        flush_lines: int,
        max_bytes: int,
        flusher: LogFlusher | None = None,
    ) -> None:
        self._bus = bus
        self._run_id = run_id
        self._flush_lines = max(1, flush_lines)
        self._max_bytes = max_bytes
        self._flusher = flusher
        self._mutex = threading.Lock()  # guards the fields below
        self._push_lock = threading.Lock()  # keeps batches in order on the bus
        self._pending: list[str] = []
        self._kept: list[str] = []
        self._kept_bytes = 0
        self._dropped_bytes = 0
        self._closed = False
        self._failed = False
        self.pushes = 0  # round trips made (for tests and the round-trip budget)
        if flusher is not None:
            flusher.register(self)

    @property
    def run_id(self) -> str:
        return self._run_id

    def write(self, lines: list[str]) -> None:
        """Queue ``lines``; pushes at once when ``flush_lines`` are waiting."""
        full = False
        with self._mutex:
            if self._closed:
                return
            for line in lines:
                self._keep(line)
            full = len(self._pending) >= self._flush_lines
        if full:
            self.flush()

    def _keep(self, line: str) -> None:
        """Store one line in the run's copy and queue it, within the byte cap (mutex held)."""
        size = len(line.encode("utf-8", "replace")) + 1  # the newline that joins it
        if self._dropped_bytes or self._kept_bytes + size > self._max_bytes:
            if not self._dropped_bytes:
                self._pending.append(_LIVE_CUT_LINE)
            self._dropped_bytes += size
            return
        self._kept.append(line)
        self._kept_bytes += size
        self._pending.append(line)

    def has_pending(self) -> bool:
        with self._mutex:
            return bool(self._pending)

    def flush(self) -> None:
        """Push every queued line in one round trip; never raises."""
        with self._push_lock:
            with self._mutex:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self._bus.append(self._run_id, batch)
                self.pushes += 1
            except Exception:
                self._report_failure(len(batch))

    def _report_failure(self, count: int) -> None:
        if self._failed:
            logger.debug("dropped %d live log lines of run %s", count, self._run_id)
            return
        self._failed = True
        logger.exception(
            "could not push %d log lines of run %s to the log bus; the run's stored "
            "log keeps them, live viewers miss them",
            count,
            self._run_id,
        )

    def detach(self) -> tuple[list[str], str | None]:
        """Stop accepting lines and hand back what was never pushed (the run's end pushes
        it in the same step that records the outcome) and the run's log text."""
        with self._push_lock:
            with self._mutex:
                self._closed = True
                batch, self._pending = self._pending, []
            if self._flusher is not None:
                self._flusher.unregister(self)
        return batch, self.text()

    @property
    def push_failed(self) -> bool:
        """Whether a push was lost: the live log misses lines the run's copy has."""
        return self._failed

    def close(self) -> str | None:
        """Flush, stop accepting lines, and return the run's log text (None: no lines)."""
        with self._mutex:
            self._closed = True
        if self._flusher is not None:
            self._flusher.unregister(self)
        self.flush()
        return self.text()

    def text(self) -> str | None:
        """The run's log as stored on the execution row, with the truncation marker."""
        with self._mutex:
            if not self._kept and not self._dropped_bytes:
                return None
            lines = list(self._kept)
            if self._dropped_bytes:
                lines.append(truncation_marker(self._dropped_bytes))
        return "\n".join(lines)


class LogFlusher:
    """A daemon thread that flushes every registered buffer each ``interval`` seconds.

    While runs come and go it ticks every ``interval``; after a whole interval in which
    no buffer was registered it sleeps until the next registration wakes it, so an idle
    worker process pays nothing and a busy one pays no wake-up per run. ``run_once``
    does one pass in the caller's thread (tests).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._cond = threading.Condition()
        self._buffers: set[LogBuffer] = set()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._touched = False  # a buffer was registered since the last pass
        self._sleeping = False  # the thread waits for a registration, not a tick

    def register(self, buffer: LogBuffer) -> None:
        with self._cond:
            self._check_fork()
            self._buffers.add(buffer)
            self._touched = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="dataforge-log-flusher", daemon=True
                )
                self._thread.start()
            elif self._sleeping:
                self._cond.notify_all()

    def unregister(self, buffer: LogBuffer) -> None:
        with self._cond:
            self._buffers.discard(buffer)

    def run_once(self) -> int:
        """Flush every registered buffer with queued lines; how many were flushed."""
        with self._cond:
            buffers = [buffer for buffer in self._buffers if buffer.has_pending()]
        for buffer in buffers:
            buffer.flush()
        return len(buffers)

    def _check_fork(self) -> None:
        # A forked child inherits the set (other runs' buffers) but not the thread.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._buffers = set()
            self._thread = None
            self._sleeping = False

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._buffers and not self._touched:
                    self._sleeping = True
                    while not self._buffers:
                        self._cond.wait()
                    self._sleeping = False
                self._touched = False
                self._cond.wait(self.interval)
            try:
                self.run_once()
            except Exception:  # pragma: no cover - flush() already never raises
                logger.exception("the log flusher failed a pass")


_flushers: dict[float, LogFlusher] = {}
_flushers_lock = threading.Lock()
_fork_hook: list[bool] = []


def default_flusher(interval: float) -> LogFlusher:
    """The process's flusher for ``interval`` (one thread per distinct interval)."""
    with _flushers_lock:
        if not _fork_hook:
            os.register_at_fork(after_in_child=_forget_flushers)
            _fork_hook.append(True)
        flusher = _flushers.get(interval)
        if flusher is None:
            flusher = _flushers[interval] = LogFlusher(interval)
        return flusher


def _forget_flushers() -> None:
    # The lock may have been held by a parent thread at fork time; replace it too.
    global _flushers_lock
    _flushers_lock = threading.Lock()
    for flusher in _flushers.values():
        flusher._cond = threading.Condition()
        flusher._check_fork()
