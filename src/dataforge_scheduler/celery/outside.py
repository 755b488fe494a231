"""Finishing a run from outside the process that ran it: the lost-run reaper, the worker's
main process (a killed child, a hard time limit, a revoke) and its consumer (a message
for a task it does not know).

They all do the same thing, here once: find the row (and lock it, where the caller's
verdict depends on the row's state), read the run's log lines from the log bus capped at
``log_max_bytes`` (none read keeps the log already stored), finish the row and its
schedule's counters in one transaction, then end the log in the bus with the usual TTL.
A log bus failure is logged and never stops the row from being finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dataforge_scheduler.celery.outcomes import describe
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.values import capped_log_text
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution
from dataforge_scheduler.sql.store import RunFinished, Session

__all__ = [
    "Finder",
    "bus_log",
    "by_task_id",
    "finish_outside",
    "on_task_rejected",
    "on_task_unknown",
]

logger = logging.getLogger(__name__)

#: Finds (and, if the caller needs it, locks) the row to finish, in the finishing session.
Finder = Callable[[Session], TaskExecution | None]


def bus_log(runtime: Runtime, run_id: str) -> str | None:
    """Every line of run ``run_id`` (its Celery task id) in the log bus, all attempts,
    capped at ``log_max_bytes``; None when there are none or the bus cannot be read
    (logged)."""
    try:
        lines = [line.text for line in runtime.logbus.read(run_id)]
    except Exception:
        logger.exception("dataforge: could not read the log of run %s", run_id)
        return None
    return capped_log_text(lines, max_bytes=runtime.settings.log_max_bytes)


def finish_outside(
    runtime: Runtime,
    find: Finder,
    *,
    status: ExecutionStatus,
    error: str,
    traceback: str | None = None,
    now: datetime | None = None,
) -> RunFinished | None:
    """Finish the row ``find`` returns as ``status``; None when there is none to finish
    (no row, or already finished: idempotent)."""
    when = now if now is not None else runtime.clock.now()
    with runtime.session() as session:
        row = find(session)
        if row is None or row.status.finished:
            return None
        finished = store.finish_run(
            session,
            celery_task_id=row.celery_task_id,
            status=status,
            now=when,
            error=error,
            traceback=traceback,
            log_output=bus_log(runtime, row.celery_task_id),
            result_max_bytes=runtime.settings.result_max_bytes,
        )
        run_id = row.celery_task_id
    if finished is None:
        return None
    try:
        runtime.logbus.finish(run_id, status.value, ttl=runtime.settings.log_ttl_seconds)
    except Exception:
        # the row is already right; only the Redis copy keeps no TTL
        logger.exception("dataforge: could not end the log of run %s", run_id)
    return finished


def by_task_id(celery_task_id: str) -> Finder:
    """A finder of the row Celery knows as ``celery_task_id``."""

    def find(session: Session) -> TaskExecution | None:
        return store.get_execution_by_celery_id(session, celery_task_id)

    return find


# ---------------------------------------------------------------- the consumer


def on_task_unknown(sender: Any = None, name: Any = None, id: Any = None, **_: Any) -> None:
    """``task_unknown``: the worker received a task it does not have and dropped it."""
    host = getattr(sender, "hostname", None) or "an unknown worker"
    reason = (
        f"task {name!r} is not registered on worker {host}: the worker dropped the message "
        "(import the task's module in that worker, or fix task_name)"
    )
    _never_ran(sender, id, reason)


def on_task_rejected(sender: Any = None, message: Any = None, exc: Any = None, **_: Any) -> None:
    """``task_rejected``: the worker could not read the message (unknown type, bad fields)."""
    headers = getattr(message, "headers", None) or {}
    host = getattr(sender, "hostname", None) or "an unknown worker"
    why = describe(exc) if exc is not None else "not a task message it understands"
    reason = f"worker {host} rejected the message of task {headers.get('task')!r}: {why}"
    _never_ran(sender, headers.get("id"), reason)


def _never_ran(consumer: Any, task_id: Any, reason: str) -> None:
    if not isinstance(task_id, str) or not task_id:
        return
    try:
        runtime = runtime_for(getattr(consumer, "app", None))
    except ConfigurationError:
        return  # a worker of an app without dataforge: none of our rows
    try:
        finished = finish_outside(
            runtime, by_task_id(task_id), status=ExecutionStatus.FAILED, error=reason
        )
    except Exception:
        logger.exception("dataforge: could not record the rejected message of %s", task_id)
        return
    if finished is not None:
        logger.error(
            "dataforge: execution %d (%s) failed: %s", finished.execution_id, task_id, reason
        )
