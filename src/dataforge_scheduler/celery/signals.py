"""Execution history: Celery task signals turned into ``task_executions`` rows.

Only ``DataForgeTask`` runs are touched; every other task is left alone. Per run, in the
process that runs the body (docs/internals.md §1):

- ``task_prerun``: ``lifecycle.begin`` records the start in the outbox and takes the
  lock, in one Redis step; a duplicate delivery is noted (``before_start`` ignores it
  and nothing is recorded). Then the run context is bound (``core.context``).
- ``task_failure`` / ``task_retry``: the error and traceback are kept on the context.
- ``task_postrun``: ``lifecycle.end`` records the outcome, the last log lines and the
  end of the live log in the outbox and releases the lock (on RETRY, extends it past the
  retry countdown: the next attempt re-enters it), in one Redis step. The context is
  reset with its token. The history writer (``history``) applies both records to the
  database.

In the worker's main process (prefork): ``task_failure`` for a hard time limit (sent
twice; ``self.request`` is empty in the second, docs/internals.md §5),
``WorkerLostError`` (the child was killed: ``lost``, §6) and ``task_revoked`` record the
run's end in the outbox (``lifecycle.end_elsewhere``; the database directly when Redis
is down), by Celery task id, idempotently, and release the lock by task id. Handlers use
their ``task_id``/``request`` arguments, never ``self.request``. In its consumer:
``task_unknown`` (a task this worker does not have) and ``task_rejected`` (a message it
cannot read) finish the row ``failed``, saying so; it never ran.

A task with ``acks_late`` and ``reject_on_worker_lost`` gets its message requeued when
its child dies (Celery 5.7 then sends no ``task_failure`` at all, docs/internals.md §16):
its row stays ``running`` and the requeued copy, flagged ``redelivered`` by the broker,
may start that same attempt again. (So may a copy the broker redelivered after
``celery_broker_visibility_timeout``, which is why that timeout must exceed the longest
run: the settings refuse a timeout below twice the default time limit.)

A bookkeeping error is logged at ERROR with the task id and never fails the user's task.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import signals

from dataforge_scheduler.celery.lifecycle import (
    begin,
    end,
    end_elsewhere,
    requeued_on_loss,
    scheduled_id,
)
from dataforge_scheduler.celery.outcomes import describe
from dataforge_scheduler.celery.outside import (
    by_task_id,
    finish_outside,
    on_task_rejected,
    on_task_unknown,
)
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.core.context import bind_run, current_run, reset_run
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.redis.keys import run_scope
from dataforge_scheduler.runtime import runtime_for

__all__ = ["connect_signals", "scheduled_id"]

logger = logging.getLogger(__name__)


def connect_signals() -> None:
    """Connect the handlers (idempotent: each has a ``dispatch_uid``; held strongly)."""
    for signal, handler in (
        (signals.task_prerun, _on_prerun),
        (signals.task_failure, _on_failure),
        (signals.task_retry, _on_retry),
        (signals.task_postrun, _on_postrun),
        (signals.task_revoked, _on_revoked),
        (signals.task_unknown, on_task_unknown),
        (signals.task_rejected, on_task_rejected),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"dataforge.{handler.__name__}")


# ---------------------------------------------------------------- start


def _on_prerun(sender: Any = None, task_id: str = "", kwargs: Any = None, **_: Any) -> None:
    if not isinstance(sender, DataForgeTask):
        return
    try:
        bind_run(begin(sender, task_id, dict(kwargs or {})))
    except Exception:
        logger.exception("dataforge: could not start the run of task %s[%s]", sender.name, task_id)


# ---------------------------------------------------------------- failure and retry


def _on_failure(
    sender: Any = None,
    task_id: str = "",
    exception: BaseException | None = None,
    kwargs: Any = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    if not isinstance(sender, DataForgeTask):
        return
    run = current_run()
    if run is not None and run.celery_task_id == task_id:
        run.state.error = describe(exception)
        run.state.traceback = getattr(einfo, "traceback", None)
        return
    # No run here: the worker's main process reporting a killed child or a time limit.
    lost = isinstance(exception, WorkerLostError)
    if lost and requeued_on_loss(sender) and not getattr(sender, "retry_on_worker_lost", False):
        # the message goes back to the queue: its copy runs this attempt again
        _release_for_task(sender, task_id, kwargs=kwargs, row=None)
        return
    _finish_elsewhere(
        sender,
        task_id,
        kwargs,
        status=ExecutionStatus.LOST if lost else ExecutionStatus.FAILED,
        error=describe(exception),
        traceback=getattr(einfo, "traceback", None),
    )


def _on_retry(
    sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any
) -> None:
    if not isinstance(sender, DataForgeTask):
        return
    run = current_run()
    if run is not None and run.celery_task_id == getattr(request, "id", None):
        cause = getattr(reason, "exc", None)
        run.state.error = describe(cause) if cause is not None else str(reason)
        run.state.traceback = getattr(einfo, "traceback", None)


# ---------------------------------------------------------------- finish


def _on_postrun(
    sender: Any = None, task_id: str = "", state: str | None = None, retval: Any = None, **_: Any
) -> None:
    if not isinstance(sender, DataForgeTask):
        return
    run = current_run()
    if run is None or run.celery_task_id != task_id:
        return
    try:
        end(run, state, retval)
    except Exception:
        logger.exception(
            "dataforge: could not finish the run of task %s[%s]", run.task_name, task_id
        )
    finally:
        if run.state.token is not None:
            reset_run(run.state.token)


# ---------------------------------------------------------------- main process


def _on_revoked(
    sender: Any = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    if not isinstance(sender, DataForgeTask) or request is None:
        return
    reason = "expired before it ran" if expired else _cancel_note(sender, str(request.id))
    if terminated:
        reason += f" (terminated by signal {signum})"
    _finish_elsewhere(
        sender,
        str(request.id),
        getattr(request, "kwargs", None),
        status=ExecutionStatus.REVOKED,
        error=reason,
        traceback=None,
    )


def _cancel_note(task: DataForgeTask, task_id: str) -> str:
    """Why the run was revoked, as its canceller noted it (overlap policy cancel_other);
    plain "revoked" for a revoke from elsewhere, or when Redis cannot say."""
    try:
        return runtime_for(task.app).backend.cancels.reason(task_id) or "revoked"
    except Exception:
        logger.warning("dataforge: could not read why run %s was revoked", task_id, exc_info=True)
        return "revoked"


def _finish_elsewhere(
    task: DataForgeTask,
    task_id: str,
    kwargs: Any,
    *,
    status: ExecutionStatus,
    error: str,
    traceback: str | None,
) -> None:
    """Record the end of a run from outside its process: idempotent, by Celery task id."""
    try:
        if end_elsewhere(task, task_id, kwargs, status=status, error=error, traceback=traceback):
            logger.warning(
                "dataforge: run %s of %s ended %s: %s", task_id, task.name, status, error
            )
            return
    except Exception:
        _log_unrecorded(task, task_id, status)
    # Redis is down: the database directly (the row may not exist yet; then the reaper
    # ends it once the outbox delivered its start)
    try:
        runtime = runtime_for(task.app)
        finished = finish_outside(
            runtime, by_task_id(task_id), status=status, error=error, traceback=traceback
        )
    except Exception:
        _log_unrecorded(task, task_id, status)
        finished = None
    _release_for_task(task, task_id, kwargs=kwargs, row=finished)


def _log_unrecorded(task: DataForgeTask, task_id: str, status: ExecutionStatus) -> None:
    logger.exception(
        "dataforge: could not record %s for task %s[%s]", status.value, task.name, task_id
    )


def _release_for_task(task: DataForgeTask, task_id: str, *, kwargs: Any, row: Any) -> None:
    """Release the run's lock by task id (main-process handlers know no token)."""
    scheduled_task_id = scheduled_id(kwargs)
    if scheduled_task_id is None and row is not None:
        scheduled_task_id = row.scheduled_task_id
    try:
        runtime_for(task.app).locks.release_for_task(
            run_scope(task.name, scheduled_task_id), task_id
        )
    except Exception:
        logger.exception("dataforge: could not release the lock of task %s[%s]", task.name, task_id)
