"""``TaskRunner``: run one task through the full path and hand back its execution row.

The path is the API's "run now" (``control.run_now``): a ``pending`` execution row
(trigger ``manual``) is committed with the Celery task id about to be used, the message
goes through the runtime's dispatcher (``app.send_task`` on the ``memory://`` broker),
the in-process worker moves that row to ``running`` (``task_prerun``), ``DataForgeTask``
takes the schedule's lock (or skips the run when another holds it), the body runs with
``task_log`` bound, and ``task_postrun`` records the outcome, the whole log and the
schedule's counters, and releases the lock. The runner waits until the row is
finished (through any retries) and returns it, detached from its session.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from dataforge_scheduler.control import backfill, rerun, run_now
from dataforge_scheduler.core.values import Acquired, LockInfo, LockOwner
from dataforge_scheduler.errors import (
    ConfigurationError,
    InvalidParams,
    LockNotAcquired,
    UnknownTask,
)
from dataforge_scheduler.redis.keys import run_scope
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

__all__ = ["RunTimeout", "Target", "TaskRunner"]

#: A schedule (row or id) or a registered Celery task name.
Target = ScheduledTask | int | str

DEFAULT_TIMEOUT = 30.0
_POLL_SECONDS = 0.01


class RunTimeout(AssertionError):
    """The run did not finish in time (an AssertionError, so pytest reports it as one)."""


class TaskRunner:
    """Runs tasks on the in-process worker: ``runner(target, **kwargs) -> TaskExecution``."""

    def __init__(self, app: Any, runtime: Runtime, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.app = app
        self.runtime = runtime
        self.timeout = timeout

    def __call__(
        self, target: Target, /, *, timeout: float | None = None, **kwargs_override: Any
    ) -> TaskExecution:
        """Run ``target`` and return its finished execution row (with ``log_output``).

        ``target`` is a schedule (a ``ScheduledTask`` or its id: its ``task_name`` and
        ``handler_kwargs``, plus ``scheduled_task_id``, so it takes the schedule's lock
        and updates its counters) or a task name (no schedule: the lock is the task
        name's). ``kwargs_override`` is merged over the stored kwargs. Raises
        ``UnknownTask`` when the task is not registered on the Celery app, and
        ``RunTimeout`` when the run has not finished after ``timeout`` seconds.
        """
        celery_task_id = self.send(target, **kwargs_override)
        return self.wait(celery_task_id, timeout=timeout)

    def send(self, target: Target, /, **kwargs_override: Any) -> str:
        """Record the ``pending`` row and send the run; return its Celery task id."""
        schedule_id, task_name, _ = self._resolve(target)
        if task_name not in self.app.tasks:
            raise UnknownTask(
                f"task {task_name!r} is not registered on Celery app {self.app.main!r}: "
                "import its module before the worker starts",
                field="task_name",
                task_name=task_name,
            )
        done = run_now(
            self.runtime,
            schedule_id=schedule_id,
            task_name=None if schedule_id is not None else task_name,
            kwargs=kwargs_override,
            # a host's tasks need not be described in the registry to be run by a test
            validate=False,
        )
        return done.run.celery_task_id

    def run_early(
        self, schedule: ScheduledTask | int, /, *, timeout: float | None = None, **kwargs: Any
    ) -> TaskExecution:
        """Run a schedule now in place of its next slot, as ``POST /tasks/{id}/run`` with
        ``skip_next`` does: the slot is recorded ``skipped`` ("ran early") and never sent.
        Returns the run's finished row. ``ConflictError`` when there is no next slot."""
        schedule_id, _, _ = self._resolve(schedule)
        done = run_now(
            self.runtime, schedule_id=schedule_id, kwargs=kwargs, validate=False, skip_next=True
        )
        return self.wait(done.run.celery_task_id, timeout=timeout)

    def rerun(
        self,
        execution: TaskExecution | int,
        /,
        *,
        timeout: float | None = None,
        **kwargs_override: Any,
    ) -> TaskExecution:
        """Run an ended run (its row or execution id) again, as ``POST
        /executions/{id}/rerun`` does, and return the new run's finished row (its
        ``rerun_of`` is the original's id). ``kwargs_override`` is merged over the
        original's kwargs. Raises ``ConflictError`` for a run still open."""
        execution_id = execution.id if isinstance(execution, TaskExecution) else execution
        done = rerun(self.runtime, execution_id, kwargs=kwargs_override, validate=False)
        return self.wait(done.run.celery_task_id, timeout=timeout)

    def backfill(
        self,
        schedule: ScheduledTask | int,
        /,
        *,
        start: datetime,
        end: datetime,
        timeout: float | None = None,
    ) -> list[TaskExecution]:
        """Backfill ``[start, end)`` as ``POST /tasks/{id}/backfill`` does and run the
        slots it created as a beat would: one at a time, oldest first, each sent once the
        one before has ended (the beat's own sender). Returns their finished rows in slot
        order; slots that already had a run are left alone. ``end`` may not be later than
        the runtime's clock."""
        from dataforge_scheduler.celery.beat import DatabaseScheduler
        from dataforge_scheduler.celery.sending import SlotSender

        schedule_id, _, _ = self._resolve(schedule)
        if schedule_id is None:
            raise ConfigurationError("backfill needs a schedule, not a task name", field="target")
        done = backfill(self.runtime, schedule_id, start=start, end=end)
        beat = DatabaseScheduler(self.app, runtime=self.runtime, clock=self.runtime.clock)
        rows: list[TaskExecution] = []
        try:
            sender = SlotSender(beat)
            for _ in done.created:
                sent, unsent = sender.send_backfill(self.runtime.clock.now())
                if unsent or not sent:
                    raise RunTimeout(f"backfill slot(s) of schedule {schedule_id} not sent")
                rows += [self.wait(slot.celery_task_id, timeout=timeout) for slot in sent]
        finally:
            beat.close()
        return rows

    def wait(self, celery_task_id: str, *, timeout: float | None = None) -> TaskExecution:
        """Wait until run ``celery_task_id`` is finished and return its row."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        row: TaskExecution | None = None
        while time.monotonic() < deadline:
            row = self.execution(celery_task_id)
            if row is not None and row.status.finished:
                return row
            time.sleep(_POLL_SECONDS)
        state = "no row" if row is None else f"status {row.status.value}"
        raise RunTimeout(
            f"run {celery_task_id} did not finish within {limit} s ({state}); is the task "
            "blocked, retrying with a long countdown, or routed to a queue the worker does "
            "not consume (dataforge_worker_parameters)?"
        )

    def execution(self, celery_task_id: str) -> TaskExecution | None:
        """The run's row as it is now (detached), or None."""
        with self.runtime.session() as session:
            row = store.get_execution_by_celery_id(session, celery_task_id)
            if row is not None:
                session.expunge(row)
            return row

    @contextmanager
    def holding_lock(self, target: Target, /, *, ttl: float = 600.0) -> Iterator[LockInfo]:
        """Hold the lock a run of ``target`` would take, as another run would; a run
        started inside the block is skipped. Yields the holder; released on exit."""
        schedule_id, task_name, _ = self._resolve(target)
        scope = run_scope(task_name, schedule_id)
        owner = LockOwner(
            celery_task_id=f"dataforge-test-holder-{uuid.uuid4().hex[:12]}",
            hostname="pytest",
            pid=os.getpid(),
        )
        locks = self.runtime.locks
        taken = locks.acquire(scope, owner, ttl=ttl)
        if not isinstance(taken, Acquired):
            raise LockNotAcquired(
                f"lock {scope!r} is already held by task {taken.celery_task_id}",
                scope=scope,
            )
        try:
            holder = locks.get(scope)
            if holder is None:  # pragma: no cover - we just took it
                raise LockNotAcquired(f"lock {scope!r} vanished as it was taken", scope=scope)
            yield holder
        finally:
            locks.release(scope, taken.token)

    def lock(self, target: Target, /) -> LockInfo | None:
        """Who holds the lock a run of ``target`` takes, or None (released)."""
        schedule_id, task_name, _ = self._resolve(target)
        return self.runtime.locks.get(run_scope(task_name, schedule_id))

    def _resolve(self, target: Target) -> tuple[int | None, str, dict[str, Any]]:
        if isinstance(target, str):
            return None, target, {}
        schedule_id = target.id if isinstance(target, ScheduledTask) else target
        if isinstance(schedule_id, bool) or not isinstance(schedule_id, int):
            message = (
                f"target must be a ScheduledTask, a schedule id or a task name, got {target!r}"
            )
            raise InvalidParams(
                message,
                field="target",
                value=target,
                errors=[{"loc": ["target"], "msg": message, "type": "type_error"}],
            )
        with self.runtime.session() as session:
            row = store.get_schedule(session, schedule_id)
            return row.id, row.task_name, dict(row.handler_kwargs or {})
