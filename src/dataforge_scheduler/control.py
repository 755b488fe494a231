"""What a host, the API, the CLI and the pytest plugin do to runs, in one place.

``run_now`` is "run now": the run's ``pending`` execution row (trigger ``manual``, a
fresh Celery task id) is committed first, in the caller's transaction hook if it has one
(the API writes its audit row there), then the run is published through the runtime's
``Dispatcher``, the same way the beat publishes a slot (``core.messages``), and its
``sent_at`` recorded. If the broker refuses the message, the row is finished ``failed``
with the reason (not counted as a run: it never started) and ``BackendUnavailable``
is raised. If this process dies between the commit and the send, the row stays
``pending`` and unsent until the reaper ends it as ``lost``.
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
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError, DataForgeError
from dataforge_scheduler.sql import store

if TYPE_CHECKING:
    from dataforge_scheduler.runtime import Runtime
    from dataforge_scheduler.sql.models import ScheduledTask
    from dataforge_scheduler.sql.store import Session

__all__ = ["ManualRun", "RecordHook", "run_now"]

logger = logging.getLogger(__name__)

#: Called inside the transaction that records a manual run, before it commits, with the
#: session, the run and its schedule (None for a bare task name).
RecordHook = Callable[["Session", ClaimedSlot, "ScheduledTask | None"], None]


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
