"""Execution history: Celery task signals turned into ``task_executions`` rows.

Only ``DataForgeTask`` runs are touched; every other task is left alone. Per run, in the
process that runs the body (docs/internals.md §1):

- ``task_prerun``: ONE statement (``store.start_run``) moves the scheduler's ``pending``
  row (found by Celery task id) or a ``retrying`` row to ``running``, or inserts a
  ``running`` row for a send that bypassed scheduler and API.
  No row back means a duplicate delivery of a run already past ``pending``:
  ``before_start`` ignores it and nothing is written. Then the run context is bound
  (``core.context``).
- ``task_failure`` / ``task_retry``: the error and traceback are kept on the context.
- ``task_postrun``: status from Celery's state, the log buffer flushed, ONE transaction
  (``store.finish_run``: the row plus its schedule's counters), ``logbus.finish``, and the
  lock released, or on RETRY extended past the retry countdown (the next attempt re-enters it).
  The context is reset with its token.

In the worker's main process (prefork): ``task_failure`` for a hard time limit (sent
twice; ``self.request`` is empty in the second, docs/internals.md §5),
``WorkerLostError`` (the child was killed: ``lost``, §6) and ``task_revoked`` finish the
row by Celery task id, idempotently, with the log lines already in the bus
(``celery.outside``), and release the lock by task id.
Handlers use their ``task_id``/``request`` arguments, never ``self.request``. In its
consumer: ``task_unknown`` (a task this worker does not have) and ``task_rejected`` (a
message it cannot read) finish the row ``failed``, saying so; it never ran.

A task with ``acks_late`` and ``reject_on_worker_lost`` gets its message requeued when
its child dies (Celery 5.7 then sends no ``task_failure`` at all, docs/internals.md §16):
its row stays
``running`` and the requeued copy, flagged ``redelivered`` by the broker, may start that
same attempt again. (So may a copy the broker redelivered after
``celery_broker_visibility_timeout``, which is why that timeout must exceed the longest
run: the settings refuse a timeout below twice the default time limit.)

A bookkeeping error is logged at ERROR with the task id and never fails the user's task.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import signals

from dataforge_scheduler.celery.headers import TRIGGER, header
from dataforge_scheduler.celery.logbuffer import LogBuffer, default_flusher
from dataforge_scheduler.celery.outcomes import Outcome, describe, outcome_of
from dataforge_scheduler.celery.outside import (
    bus_log,
    by_task_id,
    finish_outside,
    on_task_rejected,
    on_task_unknown,
)
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.core.context import RunContext, bind_run, current_run, reset_run
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.errors import LockLost
from dataforge_scheduler.redis.keys import run_scope
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.sql import store

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
        bind_run(_start_run(sender, task_id, dict(kwargs or {})))
    except Exception:
        logger.exception("dataforge: could not start the run of task %s[%s]", sender.name, task_id)


def _start_run(task: DataForgeTask, task_id: str, kwargs: dict[str, Any]) -> RunContext:
    runtime = runtime_for(task.app)
    settings = runtime.settings
    request = task.request
    retries = int(getattr(request, "retries", 0) or 0)
    scheduled_task_id = scheduled_id(kwargs)
    execution_id: int | None = None
    duplicate = False
    schedule_policy: str | None = None
    try:
        with runtime.session() as session:
            started = store.start_run(
                session,
                celery_task_id=task_id,
                task_name=task.name,
                scheduled_task_id=scheduled_task_id,
                trigger=_trigger(request),
                worker_hostname=getattr(request, "hostname", None),
                worker_pid=os.getpid(),
                kwargs=kwargs,
                retries=retries,
                now=runtime.clock.now(),
                redelivered=_requeued_on_loss(task) and _redelivered(request),
            )
        if started is None:
            duplicate = True
        else:
            execution_id = started.execution_id
            if scheduled_task_id is None:
                scheduled_task_id = started.scheduled_task_id
            schedule_policy = started.overlap_policy
    except Exception:
        logger.exception(
            "dataforge: could not record the start of task %s[%s]; it runs without "
            "an execution row",
            task.name,
            task_id,
        )
    log = None
    if execution_id is not None:
        log = LogBuffer(
            runtime.logbus,
            execution_id,
            flush_lines=settings.log_flush_lines,
            max_bytes=settings.log_max_bytes,
            flusher=default_flusher(settings.log_flush_interval),
        )
    run = RunContext(
        celery_task_id=task_id,
        task_name=task.name,
        execution_id=execution_id,
        scheduled_task_id=scheduled_task_id,
        retries=retries,
        runtime=runtime,
        log=log,
        echo=settings.log_console_echo,
        schedule_overlap_policy=schedule_policy,
    )
    run.state.duplicate = duplicate
    return run


def scheduled_id(kwargs: Any) -> int | None:
    """The ``scheduled_task_id`` kwarg as an int, or None when absent or not a number."""
    value = kwargs.get("scheduled_task_id") if isinstance(kwargs, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _requeued_on_loss(task: DataForgeTask) -> bool:
    """Whether Celery requeues this task's message when its worker is lost."""
    return bool(task.acks_late and getattr(task, "reject_on_worker_lost", False))


def _redelivered(request: Any) -> bool:
    info = getattr(request, "delivery_info", None) or {}
    return bool(info.get("redelivered"))


def _trigger(request: Any) -> str:
    value = header(request, TRIGGER)
    try:
        return ExecutionTrigger(value).value
    except ValueError:
        return ExecutionTrigger.EXTERNAL.value


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
    if lost and _requeued_on_loss(sender) and not getattr(sender, "retry_on_worker_lost", False):
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
        _finish_run(run, state, retval)
    except Exception:
        logger.exception(
            "dataforge: could not finish the run of task %s[%s]", run.task_name, task_id
        )
    finally:
        if run.state.token is not None:
            reset_run(run.state.token)


def _finish_run(run: RunContext, state: str | None, retval: Any) -> None:
    watchdog, run.state.watchdog = run.state.watchdog, None
    if watchdog is not None:
        watchdog.stop()
    if run.state.duplicate:
        return
    runtime: Runtime = run.runtime
    now = runtime.clock.now()
    outcome = outcome_of(run, state, retval=retval, now=now)
    final = outcome.status is not ExecutionStatus.RETRYING
    if not final and run.log is not None and not run.state.retry_logged:
        run.log.write([f"… retrying in {outcome.countdown:.1f} s: {outcome.error}"])
    log_text = run.log.close() if isinstance(run.log, LogBuffer) else None
    if final and run.retries and run.execution_id is not None:
        log_text = bus_log(runtime, run.execution_id) or log_text
    _guarded(run, "record the outcome", _record, runtime, run, outcome, log_text, now)
    if final and run.execution_id is not None:
        ttl = runtime.settings.log_ttl_seconds
        _guarded(
            run,
            "end the live log",
            runtime.logbus.finish,
            run.execution_id,
            outcome.status.value,
            ttl=ttl,
        )
    _guarded(run, "release the lock", _end_lock, run, outcome)


def _record(
    runtime: Runtime, run: RunContext, outcome: Outcome, log_text: str | None, now: datetime
) -> None:
    with runtime.session() as session:
        store.finish_run(
            session,
            celery_task_id=run.celery_task_id,
            status=outcome.status,
            now=now,
            result=outcome.result,
            error=outcome.error,
            traceback=outcome.traceback,
            log_output=log_text,
            result_max_bytes=runtime.settings.result_max_bytes,
            attempt=run.retries,
        )


def _end_lock(run: RunContext, outcome: Outcome) -> None:
    hold = run.state.lock
    if hold is None:
        wanted = run.state.lock_scope
        if wanted is not None and run.state.skipped_by is None:
            # the acquire failed, maybe after it ran (a lost reply): free what it may hold
            _release_unheld(run, wanted)
        return
    locks = run.runtime.locks
    if outcome.status is not ExecutionStatus.RETRYING:
        locks.release(hold.scope, hold.token)
        return
    try:
        # the next attempt re-enters by task id; the lock must outlive the countdown
        locks.extend(hold.scope, hold.token, ttl=outcome.countdown + hold.ttl)
    except LockLost:
        # the next attempt may already have run and released it (docs/internals.md §2)
        logger.debug("lock %s was gone when attempt %s ended", hold.scope, run.celery_task_id)


def _release_unheld(run: RunContext, scope: str) -> None:
    try:
        if run.runtime.locks.release_for_task(scope, run.celery_task_id):
            logger.warning(
                "released lock %s that run %s took without learning it (lost reply)",
                scope,
                run.celery_task_id,
            )
    except Exception:
        logger.warning(
            "could not release lock %s of run %s; it expires with its TTL",
            scope,
            run.celery_task_id,
            exc_info=True,
        )


def _guarded(run: RunContext, what: str, step: Any, *args: Any, **kwargs: Any) -> None:
    try:
        step(*args, **kwargs)
    except Exception:
        logger.exception(
            "dataforge: could not %s of task %s[%s] (execution %s)",
            what,
            run.task_name,
            run.celery_task_id,
            run.execution_id,
        )


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
    reason = "expired before it ran" if expired else "revoked"
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


def _finish_elsewhere(
    task: DataForgeTask,
    task_id: str,
    kwargs: Any,
    *,
    status: ExecutionStatus,
    error: str,
    traceback: str | None,
) -> None:
    """Finish a run from outside its process: idempotent, by Celery task id."""
    try:
        runtime = runtime_for(task.app)
        finished = finish_outside(
            runtime, by_task_id(task_id), status=status, error=error, traceback=traceback
        )
        if finished is not None:
            logger.warning(
                "dataforge: run %s of %s ended %s: %s", task_id, task.name, status, error
            )
    except Exception:
        logger.exception(
            "dataforge: could not record %s for task %s[%s]", status.value, task.name, task_id
        )
        finished = None
    _release_for_task(task, task_id, kwargs=kwargs, row=finished)


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
