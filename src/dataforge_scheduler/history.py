"""The history writer: drains the outbox into ``task_executions``, in batches, through any
outage.

Every worker runs one in its main process (a Celery bootstep, ``celery.writer``), so the
writers scale with the workers; ``dataforge-scheduler history-writer`` runs one on its
own. Each is a consumer of the outbox: it reads up to ``history_batch_size`` records
(waiting up to ``history_block_seconds`` for the first, then ``history_linger_seconds``
for more, so a short run's start and end are written together), fills in the log of every final
record that did not carry one (a run that retried, an end seen from outside: read from
the log bus), applies the batch in one transaction (``store.apply_history``) and only
then acknowledges it. When the database (or Redis) is down it keeps the batch and tries
again with a growing pause (up to ``history_retry_max_seconds``), logging the outage once
and then every half minute; nothing is acknowledged before its transaction commits.
Records another writer read and left unacknowledged for ``history_claim_after_seconds``
(it died, or was SIGKILLed mid-batch) are claimed and applied; applying a record twice
changes nothing, because every statement checks the row's state first. A record the
database refuses for good (a bug, a schema it does not know) is applied alone and, if it
still fails, set aside with the reason (``RunJournal.reject``), so one bad record never
holds up the rest.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from dataforge_scheduler.core.journal import FinishRecord, OutboxEntry, Record
from dataforge_scheduler.core.values import capped_log_text
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError, DataForgeError
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql import store

__all__ = ["HistoryWriter", "WriterStats", "consumer_name"]

logger = logging.getLogger(__name__)

_REPORT_EVERY = 30.0  # seconds between repeated warnings of one outage
_FIRST_PAUSE = 0.25


def consumer_name() -> str:
    """This process's writer name in the outbox's consumer group: host, pid, a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WriterStats:
    """What a writer did since it started."""

    batches: int = 0
    records: int = 0
    claimed: int = 0
    rejected: int = 0
    failures: int = 0


class HistoryWriter:
    """One consumer of the outbox (see the module docstring).

    ``runtime`` is the runtime to write with, or a callable returning it each time
    (a worker's writer follows the runtime ``setup()`` bound to its app).
    """

    def __init__(
        self, runtime: Runtime | Callable[[], Runtime], *, name: str | None = None
    ) -> None:
        self._runtime = runtime
        self.name = name or consumer_name()
        self.stats = WriterStats()
        self._held: list[OutboxEntry] = []
        self._own_checked = False
        self._next_claim = 0.0
        self._pause = _FIRST_PAUSE
        self._last_report = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def runtime(self) -> Runtime:
        return self._runtime() if callable(self._runtime) else self._runtime

    # ------------------------------------------------------------ running

    def start(self) -> HistoryWriter:
        """Run in a daemon thread until ``stop()``."""
        self._thread = threading.Thread(
            target=self.run_forever, name="dataforge-history-writer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, *, timeout: float = 5.0) -> None:
        """Ask the loop to stop after the batch in hand, and wait up to ``timeout`` s.
        What it read and did not apply stays in the outbox for the next writer."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def run_forever(self) -> None:
        """Drain until ``stop()``; never raises."""
        logger.info("history writer %s started", self.name)
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # an outage, or a bug: keep the batch, pause, retry
                self._failed(exc)
        logger.info("history writer %s stopped", self.name)

    def run_once(self) -> int:
        """One batch: read, apply, acknowledge; how many records it applied. Raises what
        stopped it (the batch is kept for the next call)."""
        runtime = self.runtime
        entries = self._next_batch(runtime)
        if not entries:
            return 0
        records = self._with_logs(runtime, [entry.record for entry in entries])
        try:
            self._apply(runtime, records)
        except (BackendUnavailable, ConfigurationError):
            raise  # an outage, or a schema not there yet: keep the batch, pause, retry
        except DataForgeError as exc:  # the database refused something: find what
            logger.warning("a history batch was refused (%s); applying it record by record", exc)
            self._apply_one_by_one(runtime, entries, records)
        runtime.backend.journal.ack(entries)
        self._held = []
        self._pause = _FIRST_PAUSE
        self.stats.batches += 1
        self.stats.records += len(entries)
        return len(entries)

    # ------------------------------------------------------------ steps

    def _next_batch(self, runtime: Runtime) -> list[OutboxEntry]:
        if self._held:
            return self._held
        settings = runtime.settings
        journal = runtime.backend.journal
        count = settings.history_batch_size
        if not self._own_checked:
            self._held = journal.pending(self.name, count=count)
            self._own_checked = True
        if not self._held and time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + settings.history_claim_after_seconds / 2
            self._held = journal.claim(
                self.name, idle=settings.history_claim_after_seconds, count=count
            )
            self.stats.claimed += len(self._held)
        if not self._held:
            self._held = journal.read(self.name, count=count, block=settings.history_block_seconds)
            linger = settings.history_linger_seconds
            if self._held and len(self._held) < count and linger > 0:
                # gather what follows: the end of a short run joins its start in the batch
                self._stop.wait(linger)
                self._held += journal.read(self.name, count=count - len(self._held), block=0)
        return self._held

    def _with_logs(self, runtime: Runtime, records: list[Record]) -> list[Record]:
        """Final records without a log get the run's whole log from the log bus."""
        filled: list[Record] = []
        for record in records:
            if isinstance(record, FinishRecord) and record.final and record.log is None:
                lines = [line.text for line in runtime.logbus.read(record.celery_task_id)]
                text = capped_log_text(lines, max_bytes=runtime.settings.log_max_bytes)
                record = replace(record, log=text)
            filled.append(record)
        return filled

    def _apply(self, runtime: Runtime, records: Sequence[Record]) -> None:
        with runtime.session() as session:
            applied = store.apply_history(
                session, records, result_max_bytes=runtime.settings.result_max_bytes
            )
        for run in applied.refused_starts:
            logger.info(
                "run %s: the database already had it past its start (a duplicate delivery, "
                "or an end recorded first); its start record changed nothing",
                run,
            )

    def _apply_one_by_one(
        self, runtime: Runtime, entries: list[OutboxEntry], records: list[Record]
    ) -> None:
        for entry, record in zip(entries, records, strict=True):
            try:
                self._apply(runtime, [record])
            except (BackendUnavailable, ConfigurationError):
                raise
            except DataForgeError as exc:
                runtime.backend.journal.reject(entry, f"{type(exc).__name__}: {exc}")
                self.stats.rejected += 1

    def _failed(self, exc: Exception) -> None:
        self.stats.failures += 1
        now = time.monotonic()
        if now - self._last_report >= _REPORT_EVERY:
            self._last_report = now
            waiting = len(self._held)
            if isinstance(exc, BackendUnavailable | ConfigurationError):
                logger.warning(
                    "history writer %s: %s; %d record(s) kept, trying again with a pause "
                    "of up to %.0f s (history waits in the outbox meanwhile)",
                    self.name,
                    exc,
                    waiting,
                    self.runtime.settings.history_retry_max_seconds,
                )
            else:
                logger.exception("history writer %s failed a batch of %d", self.name, waiting)
        self._stop.wait(self._pause)
        self._pause = min(self._pause * 2, self.runtime.settings.history_retry_max_seconds)
