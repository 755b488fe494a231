"""A DataForgeTask run's start and end as the pool process records them: one step each on
the runtime's ``RunJournal`` (the outbox), never a wait on the database.

``begin`` (from ``task_prerun``) builds the run's start record and, when the run wants
its lock, the lock request, and hands both to ``journal.start``: one Redis round trip
that tells a duplicate delivery (which must not run), takes the lock or names its
holder (the run is skipped), and appends the start to the outbox. ``end`` (from
``task_postrun``) maps Celery's final state to the outcome and hands ``journal.finish``
the end record, the log lines still buffered and what to do with the lock: one more round
trip. The history writer applies both records to ``task_executions`` a few milliseconds
later. ``end_elsewhere`` records an end seen from the worker's main process (a killed
child, a hard time limit, a revoke) the same way.

When Redis cannot be reached, nothing is silent: the start goes to the database directly
(``store.start_run``; a run that wants its lock then fails, as it cannot be guarded),
and the end too, together with its start in case the outbox still holds that
(``store.apply_history``, which keeps whichever came first).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from dataforge_scheduler.celery.headers import EXECUTION_ID, OVERLAP, SLOT, TRIGGER, header
from dataforge_scheduler.celery.logbuffer import LogBuffer, default_flusher
from dataforge_scheduler.celery.outcomes import Outcome, outcome_of, stopped_from_outside
from dataforge_scheduler.celery.renewal import DeferredRelease, default_renewer
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.core.context import LockHold, RunContext
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger, OverlapPolicy
from dataforge_scheduler.core.journal import (
    FinishRecord,
    LockEnd,
    LockEndAction,
    LockRequest,
    StartRecord,
)
from dataforge_scheduler.core.jsonable import capped_json
from dataforge_scheduler.core.values import LockOwner
from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.redis.keys import run_scope
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.sql import store

__all__ = [
    "begin",
    "done_ttl",
    "end",
    "end_elsewhere",
    "requeued_on_loss",
    "scheduled_id",
    "state_ttl",
]

logger = logging.getLogger(__name__)


def state_ttl(runtime: Runtime) -> float:
    """How long a run's own state outlives its last step: as long as the broker may still
    redeliver its message, so a duplicate is always recognised."""
    settings = runtime.settings
    return float(settings.celery_broker_visibility_timeout + settings.lost_run_grace_seconds)


def done_ttl(runtime: Runtime, task: DataForgeTask) -> float | None:
    """How long a finished run's state is kept once its history is applied: a task whose
    message is acknowledged before it runs (Celery's default) cannot be delivered again
    after it ended, so the grace suffices; one acknowledged late may be redelivered
    (a worker lost before its acknowledgement), so it keeps the full ``state_ttl``."""
    if task.acks_late:
        return None
    return float(runtime.settings.lost_run_grace_seconds)


# ---------------------------------------------------------------- start


def begin(task: DataForgeTask, task_id: str, kwargs: dict[str, Any]) -> RunContext:
    """The run's context, its start recorded (see the module docstring)."""
    runtime = runtime_for(task.app)
    settings = runtime.settings
    request = task.request
    retries = int(getattr(request, "retries", 0) or 0)
    scheduled_task_id = scheduled_id(kwargs)
    policy = _policy(header(request, OVERLAP))
    execution_id = _execution_id(header(request, EXECUTION_ID))
    record = StartRecord(
        celery_task_id=task_id,
        task_name=task.name,
        scheduled_task_id=scheduled_task_id,
        trigger=_trigger(request),
        worker_hostname=getattr(request, "hostname", None),
        worker_pid=os.getpid(),
        kwargs=kwargs,
        retries=retries,
        at=runtime.clock.now(),
        redelivered=requeued_on_loss(task) and _redelivered(request),
    )
    run = RunContext(
        celery_task_id=task_id,
        task_name=task.name,
        execution_id=execution_id,
        scheduled_task_id=scheduled_task_id,
        retries=retries,
        runtime=runtime,
        log=LogBuffer(
            runtime.logbus,
            task_id,
            flush_lines=settings.log_flush_lines,
            max_bytes=settings.log_max_bytes,
            flusher=default_flusher(settings.log_flush_interval),
        ),
        echo=settings.log_console_echo,
        schedule_overlap_policy=policy,
        trigger=record.trigger,
        scheduled_for=_slot(header(request, SLOT)),
    )
    run.state.started = record
    run.state.done_ttl = done_ttl(runtime, task)
    lock = _lock_request(task, run) if task.wants_lock(run) else None
    if lock is not None:
        # noted before the attempt: a lost reply may have taken it (end() frees it)
        run.state.lock_scope = lock.scope
    try:
        outcome = runtime.backend.journal.start(record, lock=lock, state_ttl=state_ttl(runtime))
    except BackendUnavailable as exc:
        _begin_without_redis(run, record, exc)
        return run
    run.state.journaled = True
    run.state.duplicate = outcome.duplicate
    run.state.holder = outcome.holder
    if outcome.acquired is not None and lock is not None:
        run.state.lock = LockHold(scope=lock.scope, token=outcome.acquired.token, ttl=lock.ttl)
    return run


def _lock_request(task: DataForgeTask, run: RunContext) -> LockRequest:
    ttl = float(task.lock_ttl or run.runtime.settings.lock_ttl_seconds)
    owner = LockOwner(
        celery_task_id=run.celery_task_id,
        execution_id=run.execution_id,
        hostname=getattr(task.request, "hostname", None),
        pid=os.getpid(),
    )
    return LockRequest(scope=run_scope(run.task_name, run.scheduled_task_id), owner=owner, ttl=ttl)


def _begin_without_redis(run: RunContext, record: StartRecord, exc: BackendUnavailable) -> None:
    """Redis is down: the start goes to the database, and no lock can be asked for."""
    logger.warning(
        "dataforge: Redis is unreachable at the start of %s[%s] (%s); recording the start "
        "in the database directly",
        run.task_name,
        run.celery_task_id,
        exc,
    )
    run.state.lock_error = exc
    try:
        with run.runtime.session() as session:
            started = store.apply_history(session, [record])
    except Exception:
        logger.exception(
            "dataforge: could not record the start of task %s[%s] either; it runs without "
            "an execution row until its end is recorded",
            run.task_name,
            run.celery_task_id,
        )
        return
    if record.celery_task_id in started.refused_starts:
        run.state.duplicate = True


# ---------------------------------------------------------------- end


def end(run: RunContext, state: str | None, retval: Any) -> None:
    """Record the run's end (see the module docstring)."""
    watchdog, run.state.watchdog = run.state.watchdog, None
    if watchdog is not None:
        watchdog.stop()
    if run.state.duplicate:
        _discard_log(run)
        return
    runtime: Runtime = run.runtime
    settings = runtime.settings
    now = runtime.clock.now()
    outcome = outcome_of(run, state, retval=retval, now=now)
    if stopped_from_outside(state):
        outcome = _cancelled(runtime, run.celery_task_id, outcome)
    final = outcome.status is not ExecutionStatus.RETRYING
    log = run.log
    if not final and log is not None and not run.state.retry_logged:
        log.write([f"… retrying in {outcome.countdown:.1f} s: {outcome.error}"])
    lines, text = log.detach() if isinstance(log, LogBuffer) else ([], None)
    record = FinishRecord(
        celery_task_id=run.celery_task_id,
        status=outcome.status,
        at=now,
        result=capped_json(outcome.result, max_bytes=settings.result_max_bytes),
        error=outcome.error,
        traceback=outcome.traceback,
        attempt=run.retries,
        # a first attempt's buffer holds its whole log; after retries the log bus has
        # every attempt's lines, which the history writer reads
        log=text if (run.retries == 0 or not final) else None,
    )
    lock_end = _lock_end(run, outcome)
    try:
        acted = runtime.backend.journal.finish(
            record,
            log_lines=lines,
            log_ttl=settings.log_ttl_seconds,
            lock=lock_end,
            state_ttl=state_ttl(runtime),
            done_ttl=run.state.done_ttl,
        )
    except BackendUnavailable as exc:
        _end_without_redis(run, record, text, exc)
        return
    if lock_end is not None and lock_end.action is LockEndAction.RELEASE_FOR_TASK and acted:
        logger.warning(
            "released lock %s that run %s took without learning it (lost reply)",
            lock_end.scope,
            run.celery_task_id,
        )


def _cancelled(runtime: Runtime, task_id: str, outcome: Outcome) -> Outcome:
    """A run its canceller stopped (overlap policy ``cancel_other``) ends ``revoked``
    with the reason it noted, whichever process records the end first; without a note
    the outcome stands."""
    try:
        reason = runtime.backend.cancels.reason(task_id)
    except Exception:  # the end must be recorded whatever Redis says
        logger.warning("dataforge: could not read why run %s was stopped", task_id, exc_info=True)
        return outcome
    if reason is None:
        return outcome
    return Outcome(ExecutionStatus.REVOKED, error=f"{reason} (terminated)")


def _lock_end(run: RunContext, outcome: Outcome) -> LockEnd | None:
    hold = run.state.lock
    if hold is None:
        scope = run.state.lock_scope
        if scope is not None and run.state.holder is None and not run.state.duplicate:
            # the acquire failed, maybe after it ran (a lost reply): free what it may hold
            return LockEnd(scope, LockEndAction.RELEASE_FOR_TASK, run.celery_task_id)
        return None
    if outcome.status is ExecutionStatus.RETRYING:
        # the next attempt re-enters by task id; the lock must outlive the countdown
        return LockEnd(
            hold.scope, LockEndAction.EXTEND, hold.token, ttl=outcome.countdown + hold.ttl
        )
    return LockEnd(hold.scope, LockEndAction.RELEASE, hold.token)


def _end_without_redis(
    run: RunContext, record: FinishRecord, text: str | None, exc: BackendUnavailable
) -> None:
    """Redis is down: the end (and the start, which the outbox may still hold) go to the
    database; the lock is released as soon as Redis answers again (or expires)."""
    logger.warning(
        "dataforge: Redis is unreachable at the end of %s[%s] (%s); recording the outcome "
        "in the database directly; its lock is released when Redis answers again",
        run.task_name,
        run.celery_task_id,
        exc,
    )
    hold = run.state.lock
    if hold is not None and record.final:
        # freed as soon as Redis answers again, not only when its TTL runs out
        default_renewer().add(
            DeferredRelease(run.runtime.locks, hold.scope, hold.token, ttl=hold.ttl)
        )
    records: list[StartRecord | FinishRecord] = []
    if run.state.started is not None and run.state.journaled:
        records.append(run.state.started)
    records.append(record if record.log is not None else _with_log(record, text))
    try:
        with run.runtime.session() as session:
            store.apply_history(
                session, records, result_max_bytes=run.runtime.settings.result_max_bytes
            )
    except Exception:
        logger.exception(
            "dataforge: could not record the outcome of task %s[%s]",
            run.task_name,
            run.celery_task_id,
        )


def _with_log(record: FinishRecord, text: str | None) -> FinishRecord:
    return FinishRecord(
        celery_task_id=record.celery_task_id,
        status=record.status,
        at=record.at,
        result=record.result,
        error=record.error,
        traceback=record.traceback,
        attempt=record.attempt,
        log=text,
    )


def _discard_log(run: RunContext) -> None:
    if isinstance(run.log, LogBuffer):
        run.log.detach()


# ---------------------------------------------------------------- an end seen from outside


def end_elsewhere(
    task: DataForgeTask,
    task_id: str,
    kwargs: Any,
    *,
    status: ExecutionStatus,
    error: str,
    traceback: str | None,
    now: datetime | None = None,
) -> bool:
    """Record the end of a run this process did not run (the worker's main process) and
    free its lock by task id; True when it went to the outbox (else the caller records it
    in the database)."""
    runtime = runtime_for(task.app)
    settings = runtime.settings
    record = FinishRecord(
        celery_task_id=task_id,
        status=status,
        at=now if now is not None else runtime.clock.now(),
        error=error,
        traceback=traceback,
    )
    scope = run_scope(task.name, scheduled_id(kwargs))
    try:
        runtime.backend.journal.finish(
            record,
            log_lines=[],
            log_ttl=settings.log_ttl_seconds,
            lock=LockEnd(scope, LockEndAction.RELEASE_FOR_TASK, task_id),
            state_ttl=state_ttl(runtime),
        )
    except BackendUnavailable as exc:
        logger.warning(
            "dataforge: Redis is unreachable to record %s of %s: %s", status, task_id, exc
        )
        return False
    return True


# ---------------------------------------------------------------- reading the request


def scheduled_id(kwargs: Any) -> int | None:
    """The ``scheduled_task_id`` kwarg as an int, or None when absent or not a number."""
    value = kwargs.get("scheduled_task_id") if isinstance(kwargs, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def requeued_on_loss(task: DataForgeTask) -> bool:
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


def _slot(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        slot = datetime.fromisoformat(value)
    except ValueError:
        return None
    return slot if slot.tzinfo is not None else None


def _policy(value: Any) -> str | None:
    try:
        return OverlapPolicy(value).value if value is not None else None
    except ValueError:
        return None


def _execution_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
