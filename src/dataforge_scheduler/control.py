"""What a host, the API, the CLI and the pytest plugin do to runs, in one place.

``run_now`` is "run now": the run's ``pending`` execution row (trigger ``manual``, a
fresh Celery task id) is committed first, in the caller's transaction hook if it has one
(the API writes its audit row there), then the run is published through the runtime's
``Dispatcher``, the same way the beat publishes a slot (``core.messages``), and its
``sent_at`` recorded. If the broker refuses the message, the row is finished ``failed``
with the reason (not counted as a run: it never started) and ``BackendUnavailable``
is raised. If this process dies between the commit and the send, the row stays
``pending`` and unsent until the reaper ends it as ``lost``.

``cancel_run`` stops a run. Its reason is noted where the worker reads it
(``runtime.backend.cancels``), the run is revoked through the dispatcher (dropped when a
worker receives it; terminated with SIGTERM when it is going), and its row is ended
``revoked`` with who and why in one transaction with the caller's hook: at once for a
run not started, by its worker when it stops for one going (the run's own end releases
its lock). A body may ignore SIGTERM; ``force=True`` sends SIGKILL instead. It cannot
follow later: once a worker has terminated a run it forgets it, so a second revoke of
the same run reaches nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.messages import RunMessage
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.errors import (
    BackendUnavailable,
    ConfigurationError,
    ConflictError,
    DataForgeError,
)
from dataforge_scheduler.sql import store

if TYPE_CHECKING:
    from dataforge_scheduler.runtime import Runtime
    from dataforge_scheduler.sql.models import ScheduledTask
    from dataforge_scheduler.sql.store import Session

__all__ = ["CancelHook", "Cancellation", "ManualRun", "RecordHook", "cancel_run", "run_now"]

logger = logging.getLogger(__name__)

#: Called inside the transaction that records a manual run, before it commits, with the
#: session, the run and its schedule (None for a bare task name).
RecordHook = Callable[["Session", ClaimedSlot, "ScheduledTask | None"], None]


#: Called inside the transaction that records a cancellation, before it commits, with
#: the session, the run's status before it and the cancellation.
CancelHook = Callable[["Session", ExecutionStatus, "Cancellation"], None]


@dataclass(frozen=True)
class Cancellation:
    """What ``cancel_run`` did: the run's status now (``revoked``, or ``running`` while
    its worker stops it) and the reason its row records."""

    execution_id: int
    celery_task_id: str
    status: ExecutionStatus
    reason: str


@dataclass(frozen=True)
class ManualRun:
    """A manual run that was recorded and published: the run and the message sent."""

    run: ClaimedSlot
    message: RunMessage


def run_now(
    runtime: Runtime,
    *,
    schedule_id: int | None = None,
    task_name: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    validate: bool = True,
    on_record: RecordHook | None = None,
) -> ManualRun:
    """Run a schedule (``schedule_id``: its task and ``handler_kwargs``, ``kwargs`` merged
    over them, plus ``scheduled_task_id``) or a bare ``task_name`` now.

    ``validate`` checks the kwargs against the task's registered params (``UnknownTask``
    or ``InvalidParams``; skipped for a task the registry does not describe when False).
    Raises ``ScheduleNotFound``, ``ConfigurationError`` when the runtime has no
    dispatcher, and ``BackendUnavailable`` when the broker refused the message (the row
    then says so).
    """
    dispatcher = runtime.dispatcher
    if dispatcher is None:
        raise ConfigurationError(
            "the runtime has no dispatcher: call dataforge_scheduler.setup()",
            field="dispatcher",
        )
    if (schedule_id is None) == (task_name is None):
        raise ConfigurationError("give exactly one of schedule_id and task_name", field="target")
    celery_task_id = str(uuid.uuid4())
    now = runtime.clock.now()
    with runtime.session() as session:
        schedule = None if schedule_id is None else store.get_schedule(session, schedule_id)
        name = schedule.task_name if schedule is not None else str(task_name)
        stored: Mapping[str, Any] = {} if schedule is None else (schedule.handler_kwargs or {})
        merged = {**stored, **(kwargs or {})}
        if validate:
            merged = runtime.registry.validate_kwargs(name, merged)
        if schedule is not None:
            merged["scheduled_task_id"] = schedule.id
        run = store.create_manual_run(
            session,
            schedule=schedule,
            task_name=name,
            celery_task_id=celery_task_id,
            kwargs=merged,
            now=now,
        )
        if on_record is not None:
            on_record(session, run, schedule)
    try:
        message = dispatcher.dispatch(run)
    except Exception as exc:  # any broker failure: the row says it was never sent
        logger.warning("sending manual run %s of %s failed: %s", celery_task_id, name, exc)
        _mark_unsent(runtime, run, exc)
        if isinstance(exc, DataForgeError):
            raise
        raise BackendUnavailable(f"the run was recorded but could not be sent: {exc}") from exc
    _mark_sent(runtime, run)
    return ManualRun(run=run, message=message)


def _mark_sent(runtime: Runtime, run: ClaimedSlot) -> None:
    try:
        with runtime.session() as session:
            store.mark_sent(session, [run.execution_id], now=runtime.clock.now())
    except DataForgeError:  # the run is on its way; only the reaper's clock starts earlier
        logger.exception("could not record the send of execution %s", run.execution_id)


def _mark_unsent(runtime: Runtime, run: ClaimedSlot, exc: Exception) -> None:
    try:
        with runtime.session() as session:
            store.finish_run(
                session,
                celery_task_id=run.celery_task_id,
                status=ExecutionStatus.FAILED,
                now=runtime.clock.now(),
                error=f"not sent: the broker refused the message ({exc})",
            )
    except DataForgeError:  # the database may be the thing that is down
        logger.exception("could not mark unsent run %s as failed", run.celery_task_id)


def cancel_run(
    runtime: Runtime,
    execution_id: int,
    *,
    reason: str | None = None,
    by: str | None = None,
    force: bool = False,
    on_record: CancelHook | None = None,
) -> Cancellation:
    """Cancel execution ``execution_id`` (see the module docstring); the row records
    ``cancelled by <by>: <reason>``.

    Raises ``ExecutionNotFound``, ``ConflictError`` naming the status when the run has
    already ended, ``ConfigurationError`` when the runtime has no dispatcher, and
    ``BackendUnavailable`` when the broker cannot take the revoke (nothing was changed
    then).
    """
    dispatcher = runtime.dispatcher
    if dispatcher is None:
        raise ConfigurationError(
            "the runtime has no dispatcher: call dataforge_scheduler.setup()",
            field="dispatcher",
        )
    text = "cancelled" + (f" by {by}" if by else "") + (f": {reason}" if reason else "")
    with runtime.session() as session:
        row = store.get_execution(session, execution_id)
        status, celery_task_id = ExecutionStatus(row.status), row.celery_task_id
    if status.finished:
        raise ConflictError(
            f"execution {execution_id} has already ended ({status}): there is nothing to cancel",
            execution_id=execution_id,
            status=str(status),
        )
    try:  # before the revoke, so whichever process records the end reads it
        runtime.backend.cancels.note(celery_task_id, text)
    except DataForgeError as exc:
        logger.warning("could not note why run %s is cancelled (%s)", celery_task_id, exc)
    # every run not ended, even one not sent yet: a sweep may be sending it right now
    dispatcher.cancel([celery_task_id], signal="SIGKILL" if force else "SIGTERM")
    with runtime.session() as session:
        before, row = store.cancel_execution(
            session, execution_id, reason=text, now=runtime.clock.now()
        )
        done = Cancellation(execution_id, celery_task_id, ExecutionStatus(row.status), text)
        if on_record is not None:
            on_record(session, before, done)
    logger.warning("execution %s (%s): %s", execution_id, celery_task_id, text)
    return done
