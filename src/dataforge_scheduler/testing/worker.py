"""The in-process Celery worker the plugin runs tasks on.

A real ``WorkController`` (Celery's ``TestWorkController``, as ``start_worker`` builds
it) consumes the ``memory://`` broker in a daemon thread of the test process, with the
``threads`` pool by default, so every run goes through Celery's real request path:
``task_prerun``, ``before_start`` (the lock), the body, ``task_failure``/``task_retry``
and ``task_postrun`` (history, log, lock release). Eager mode would not: with
``task_eager_propagates`` it skips ``on_failure`` and ``task_failure``, and it ignores
retry countdowns (docs/internals.md §14).

One worker is kept for the whole session per Celery app, because stopping one costs
up to two seconds (Celery's synchronous consumer loop drains the broker with a 2 s
timeout) and starting one costs milliseconds. The runs find the runtime through
``runtime_for(task.app)`` when they start, so the runtime each test binds with
``setup()`` is the one its runs use. A worker on another app, or with other
parameters, replaces it; queued messages left by earlier tests are purged first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["InProcessWorker", "WorkerPool"]

logger = logging.getLogger(__name__)

DEFAULT_PARAMETERS: dict[str, Any] = {"pool": "threads", "concurrency": 2}
START_TIMEOUT = 30.0


class InProcessWorker:
    """A Celery worker consuming ``app``'s queues in a daemon thread of this process."""

    def __init__(self, app: Any, parameters: Mapping[str, Any] | None = None) -> None:
        self.app = app
        self.parameters: dict[str, Any] = {**DEFAULT_PARAMETERS, **dict(parameters or {})}
        self.controller: Any = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<InProcessWorker app={getattr(self.app, 'main', None)!r} {self.parameters}>"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def queue_names(self) -> list[str]:
        """The queues this worker consumes: ``queues=`` if given, else the app's default."""
        given = self.parameters.get("queues")
        if given:
            return [given] if isinstance(given, str) else list(given)
        return [str(self.app.conf.task_default_queue)]

    def purge(self) -> None:
        """Drop messages waiting in this worker's queues (left by earlier tests)."""
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in self.queue_names():
                channel.queue_purge(name)

    def start(self) -> InProcessWorker:
        from celery import _state
        from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker

        params = dict(self.parameters)
        loglevel = params.pop("loglevel", "WARNING")
        self.app.conf.worker_hijack_root_logger = False  # leave pytest's logging alone
        setup_app_for_worker(self.app, loglevel, None)  # type: ignore[arg-type]
        self.purge()
        self.controller = TestWorkController(
            app=self.app,
            loglevel=loglevel,
            logfile=None,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            **params,
        )
        self._thread = threading.Thread(
            target=self.controller.start, name="dataforge-test-worker", daemon=True
        )
        self._thread.start()
        self._wait_started()
        # as start_worker does: the worker marks the thread as a task thread, which
        # would make AsyncResult.get() in the test refuse to block
        _state._set_task_join_will_block(False)  # type: ignore[attr-defined]
        logger.debug("started %r", self)
        return self

    def _wait_started(self) -> None:
        # TestWorkController.ensure_started() waits forever, even when the thread died
        started: threading.Event = self.controller._on_started
        deadline = time.monotonic() + START_TIMEOUT
        while not started.wait(0.05):
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("the in-process Celery worker stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the in-process Celery worker did not start in {START_TIMEOUT} s"
                )

    def stop(self) -> None:
        """Warm shutdown: running tasks finish. The consumer thread ends on its own
        within two seconds (its broker poll times out); it is a daemon thread."""
        if self.controller is None:
            return
        controller, self.controller = self.controller, None
        controller.stop()
        if self._thread is not None:
            self._thread.join(timeout=0.05)
        logger.debug("stopped %r", self)


class WorkerPool:
    """Keeps one running worker for the session; ``worker_for`` reuses or replaces it."""

    def __init__(self) -> None:
        self._current: InProcessWorker | None = None

    def worker_for(self, app: Any, parameters: Mapping[str, Any] | None = None) -> InProcessWorker:
        wanted = {**DEFAULT_PARAMETERS, **dict(parameters or {})}
        current = self._current
        if (
            current is not None
            and current.app is app
            and current.parameters == wanted
            and current.running
        ):
            return current
        self.close()
        self._current = InProcessWorker(app, wanted).start()
        return self._current

    def close(self) -> None:
        if self._current is not None:
            self._current.stop()
            self._current = None
