"""The history writer inside every Celery worker: a bootstep that runs it in the worker's
main process.

``setup()`` adds ``HistoryWriterStep`` to the app's worker blueprint, so each ``celery
worker`` of the app drains the outbox into ``task_executions`` (``history``): the writers
scale with the workers and a run's history reaches the database a few milliseconds after
its end. The step starts after the pool (prefork children are forked first) and stops
before it, finishing the batch in hand; what it read and did not apply is claimed by
another writer. ``history_writer_in_worker = False`` leaves the work to standalone
``dataforge-scheduler history-writer`` processes.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from dataforge_scheduler.history import HistoryWriter, consumer_name
from dataforge_scheduler.runtime import runtime_for

__all__ = ["HistoryWriterStep", "add_history_writer"]

logger = logging.getLogger(__name__)

_STOP_TIMEOUT = 10.0


class HistoryWriterStep(bootsteps.StartStopStep):
    """Runs a ``HistoryWriter`` thread in the worker's main process."""

    label = "dataforge history writer"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.writer: HistoryWriter | None = None

    def start(self, parent: Any) -> None:
        app = parent.app
        runtime = runtime_for(app)
        if not runtime.settings.history_writer_in_worker:
            logger.info("history writer not started here (history_writer_in_worker is off)")
            return
        # the runtime is looked up each batch: a later setup() of the app is followed
        self.writer = HistoryWriter(lambda: runtime_for(app), name=consumer_name()).start()

    def stop(self, parent: Any) -> None:
        if self.writer is not None:
            self.writer.stop(timeout=_STOP_TIMEOUT)
            self.writer = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def add_history_writer(app: Any) -> None:
    """Add the step to ``app``'s worker blueprint (idempotent)."""
    app.steps["worker"].add(HistoryWriterStep)
