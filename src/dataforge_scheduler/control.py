"""What a host, the API, the CLI and the pytest plugin do to runs, in one place.

``run_now`` is "run now": the run's ``pending`` execution row (trigger ``manual``, a
fresh Celery task id) is committed first, in the caller's transaction hook if it has one
(the API writes its audit row there), then the run is published through the runtime's
``Dispatcher``, the same way the beat publishes a slot (``core.messages``), and its
``sent_at`` recorded. If the broker refuses the message, the row is finished ``failed``
with the reason (not counted as a run: it never started) and ``BackendUnavailable``
is raised. If this process dies between the commit and the send, the row stays
``pending`` and unsent until the reaper ends it as ``lost``.

``rerun`` runs an ended run again: a new manual run with the original's task and
kwargs (an override merged over them), whose row points at the original (``rerun_of``).

``cancel_run`` stops a run. Its reason is noted where the worker reads it
(``runtime.backend.cancels``), the run is revoked through the dispatcher (dropped when a
worker receives it; terminated with SIGTERM when it is going), and its row is ended
``revoked`` with who and why in one transaction with the caller's hook: at once for a
run not started, by its worker when it stops for one going (the run's own end releases
its lock). A body may ignore SIGTERM; ``force=True`` sends SIGKILL instead. It cannot
follow later: once a worker has terminated a run it forgets it, so a second revoke of
the same run reaches nothing.

``backfill`` asks for the runs a schedule would have had in a past range: its slots there
(``core.backfill``) become ``queued`` rows with trigger ``backfill``, which the beat sends
one at a time in slot order (``sql.store.backfill``); ``cancel_backfill`` revokes the ones
still waiting.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.core.backfill import BackfillSlot, backfill_slots
from dataforge_scheduler.core.enums import ExecutionStatus, TaskType
from dataforge_scheduler.core.messages import RunMessage
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.core.triggers import trigger_for
from dataforge_scheduler.errors import (
    BackendUnavailable,
    ConfigurationError,
    ConflictError,
    DataForgeError,
)
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.store import backfill as backfills

if TYPE_CHECKING:
    from dataforge_scheduler.core.ports import Dispatcher
    from dataforge_scheduler.runtime import Runtime
    from dataforge_scheduler.sql.store import Session

__all__ = [
    "Backfill",
    "BackfillHook",
    "CancelHook",
    "Cancellation",
    "ManualRun",
    "RecordHook",
    "backfill",
    "cancel_backfill",
    "cancel_run",
    "rerun",
    "run_now",
]

logger = logging.getLogger(__name__)

#: The kwarg that ties a run to its schedule (the lock, the counters).
SCHEDULE_KWARG = "scheduled_task_id"

#: Called inside the transaction that records a manual run, before it commits, with the
#: session, the run and its schedule (None for a bare task name).
RecordHook = Callable[["Session", ClaimedSlot, "ScheduledTask | None"], None]


#: Called inside the transaction that records a cancellation, before it commits, with
#: the session, the run's status before it and the cancellation.
CancelHook = Callable[["Session", ExecutionStatus, "Cancellation"], None]


#: Called inside the transaction that records a backfill (or its cancellation), before
#: it commits, with the session and what it did.
BackfillHook = Callable[["Session", "Backfill"], None]


@dataclass(frozen=True)
class Backfill:
    """What ``backfill`` found in ``[start, end)``: the slots it ``created`` (``queued``
    rows; a dry run's have no row) and the ones that already had a row (``existing``,
    left alone), each oldest first; or, from ``cancel_backfill``, how many waiting slots
    it ``cancelled``."""

    scheduled_task_id: int
    start: datetime | None = None
    end: datetime | None = None
    dry_run: bool = False
    created: tuple[BackfillSlot, ...] = ()
    existing: tuple[BackfillSlot, ...] = ()
    cancelled: int = 0


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
    """A manual run that was recorded and published: the run and the message sent, and
    the slot it took the place of (``skip_next``)."""

    run: ClaimedSlot
    message: RunMessage
    skipped_slot: datetime | None = None


def run_now(
    runtime: Runtime,
    *,
    schedule_id: int | None = None,
    task_name: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    validate: bool = True,
    skip_next: bool = False,
    on_record: RecordHook | None = None,
) -> ManualRun:
    """Run a schedule (``schedule_id``: its task and ``handler_kwargs``, ``kwargs`` merged
    over them, plus ``scheduled_task_id``) or a bare ``task_name`` now.

    ``validate`` checks the kwargs against the task's registered params (``UnknownTask``
    or ``InvalidParams``; skipped for a task the registry does not describe when False).
    ``skip_next`` makes this run take the place of the schedule's next slot: in the same
    transaction, that slot is recorded ``skipped`` ("ran early") and is never sent
    (``ConflictError`` when there is no next slot, or a scheduler claimed it already).
    Raises ``ScheduleNotFound``, ``ConfigurationError`` when the runtime has no
    dispatcher, and ``BackendUnavailable`` when the broker refused the message (the row
    then says so).
    """
    dispatcher = _dispatcher(runtime)
    if (schedule_id is None) == (task_name is None):
        raise ConfigurationError("give exactly one of schedule_id and task_name", field="target")
    if skip_next and schedule_id is None:
        raise ConfigurationError("skip_next needs a schedule, not a task name", field="skip_next")
    skipped: datetime | None = None
    with runtime.session() as session:
        schedule = (
            None
            if schedule_id is None
            else store.get_schedule(session, schedule_id, for_update=skip_next)
        )
        name = schedule.task_name if schedule is not None else str(task_name)
        stored: Mapping[str, Any] = {} if schedule is None else (schedule.handler_kwargs or {})
        run = _record(
            runtime, session, schedule, name, {**stored, **(kwargs or {})}, validate=validate
        )
        if skip_next and schedule is not None:
            skipped = store.skip_next_slot(
                session,
                schedule,
                reason=f"ran early: run now (execution {run.execution_id}) took this slot",
                now=runtime.clock.now(),
            )
        if on_record is not None:
            on_record(session, run, schedule)
    try:
        done = _send(runtime, dispatcher, run)
    except DataForgeError:
        if skipped is not None and schedule_id is not None:
            _restore_slot(runtime, schedule_id, skipped)
        raise
    return ManualRun(run=done.run, message=done.message, skipped_slot=skipped)


def _restore_slot(runtime: Runtime, schedule_id: int, slot: datetime) -> None:
    """Give back a slot a run that was never sent skipped (a scheduler that has not
    passed it yet then runs it as planned)."""
    try:
        with runtime.session() as session:
            store.unskip_slot(session, schedule_id, slot)
    except DataForgeError:  # the database may be the thing that is down
        logger.exception("could not give back slot %s of schedule %s", slot, schedule_id)


def rerun(
    runtime: Runtime,
    execution_id: int,
    *,
    kwargs: Mapping[str, Any] | None = None,
    validate: bool = True,
    on_record: RecordHook | None = None,
) -> ManualRun:
    """Run execution ``execution_id`` again: a new manual run of the same task with the
    same kwargs (``kwargs`` merged over them), on the same schedule while it exists (its
    lock, queue and counters; a bare task run when it was deleted), whose row points at
    the original through ``rerun_of``.

    Only a run that has ended can be run again: ``ConflictError`` names the status of
    one still open (cancel it first, or wait). Otherwise as ``run_now``: the kwargs are
    validated against the task's params (``UnknownTask``, ``InvalidParams``), and
    ``ExecutionNotFound``, ``ConfigurationError`` and ``BackendUnavailable`` are raised.
    """
    dispatcher = _dispatcher(runtime)
    with runtime.session() as session:
        original = store.get_execution(session, execution_id)
        status = ExecutionStatus(original.status)
        if not status.finished:
            raise ConflictError(
                f"execution {execution_id} has not ended ({status}): wait for it, or cancel "
                "it, before running it again",
                execution_id=execution_id,
                status=str(status),
            )
        schedule = (
            None
            if original.scheduled_task_id is None
            else session.get(ScheduledTask, original.scheduled_task_id)
        )
        stored = {k: v for k, v in (original.kwargs or {}).items() if k != SCHEDULE_KWARG}
        run = _record(
            runtime,
            session,
            schedule,
            original.task_name,
            {**stored, **(kwargs or {})},
            validate=validate,
            rerun_of=original.id,
        )
        if on_record is not None:
            on_record(session, run, schedule)
    return _send(runtime, dispatcher, run)


def _dispatcher(runtime: Runtime) -> Dispatcher:
    if runtime.dispatcher is None:
        raise ConfigurationError(
            "the runtime has no dispatcher: call dataforge_scheduler.setup()",
            field="dispatcher",
        )
    return runtime.dispatcher


def _record(
    runtime: Runtime,
    session: Session,
    schedule: ScheduledTask | None,
    task_name: str,
    kwargs: dict[str, Any],
    *,
    validate: bool,
    rerun_of: int | None = None,
) -> ClaimedSlot:
    """The ``pending`` row of a manual run, flushed in ``session`` (not committed)."""
    if validate:
        kwargs = runtime.registry.validate_kwargs(task_name, kwargs)
    if schedule is not None:
        kwargs[SCHEDULE_KWARG] = schedule.id
    return store.create_manual_run(
        session,
        schedule=schedule,
        task_name=task_name,
        celery_task_id=str(uuid.uuid4()),
        kwargs=kwargs,
        now=runtime.clock.now(),
        rerun_of=rerun_of,
    )


def _send(runtime: Runtime, dispatcher: Dispatcher, run: ClaimedSlot) -> ManualRun:
    """Publish a committed manual run; its row records the send, or why it failed."""
    try:
        message = dispatcher.dispatch(run)
    except Exception as exc:  # any broker failure: the row says it was never sent
        logger.warning(
            "sending manual run %s of %s failed: %s", run.celery_task_id, run.task_name, exc
        )
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
    dispatcher = _dispatcher(runtime)
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


def backfill(
    runtime: Runtime,
    schedule_id: int,
    *,
    start: datetime,
    end: datetime,
    dry_run: bool = False,
    on_record: BackfillHook | None = None,
) -> Backfill:
    """Create the runs schedule ``schedule_id`` would have had from ``start`` (included)
    to ``end`` (excluded, not in the future): the slots its trigger fires there, with its
    zone's DST rules, ``start_at``/``end_at`` and exclusions. Each slot without a row
    gets a ``queued`` row with trigger ``backfill`` and the schedule's kwargs; the beat
    sends them one at a time, oldest first, each once nothing else of the schedule is
    open, with its slot time in the run's context (``df_slot``). Slots that already have
    a row are left alone and reported. ``dry_run`` writes nothing.

    Raises ``ScheduleNotFound``, ``ConflictError`` for a ``manual`` schedule (it has no
    slots), and ``InvalidSchedule`` naming the field for a range that is empty, reaches
    into the future, or holds more than the setting ``backfill_max_slots``.
    """
    with runtime.session() as session:
        schedule = store.get_schedule(session, schedule_id, for_update=not dry_run)
        if TaskType(schedule.task_type) is TaskType.MANUAL:
            raise ConflictError(
                f"schedule {schedule_id} is manual: it has no slots to backfill (run it now)",
                field="task_type",
                schedule_id=schedule_id,
            )
        trigger = trigger_for(schedule, runtime.settings.celery_timezone)
        slots = backfill_slots(
            trigger,
            start=start,
            end=end,
            now=runtime.clock.now(),
            limit=runtime.settings.backfill_max_slots,
        )
        if dry_run:
            existing = backfills.existing_slots(session, schedule_id, slots)
            taken = {slot.scheduled_for for slot in existing}
            created = [BackfillSlot(slot) for slot in slots if slot not in taken]
        else:
            created, existing = backfills.insert_backfill(
                session, schedule, slots, now=runtime.clock.now()
            )
        done = Backfill(
            schedule_id,
            start=start,
            end=end,
            dry_run=dry_run,
            created=tuple(created),
            existing=tuple(existing),
        )
        if on_record is not None and not dry_run:
            on_record(session, done)
    if created and not dry_run:
        logger.info(
            "backfill of schedule %s: %d slot(s) from %s to %s queued, %d had a row",
            schedule_id,
            len(created),
            start.isoformat(),
            end.isoformat(),
            len(existing),
        )
    return done


def cancel_backfill(
    runtime: Runtime,
    schedule_id: int,
    *,
    reason: str | None = None,
    by: str | None = None,
    on_record: BackfillHook | None = None,
) -> Backfill:
    """Revoke the backfill slots of schedule ``schedule_id`` still waiting; each row
    records ``backfill cancelled by <by>: <reason>``. A backfill run already sent goes
    on (``cancel_run`` stops it). Raises ``ScheduleNotFound``."""
    text = "backfill cancelled" + (f" by {by}" if by else "") + (f": {reason}" if reason else "")
    with runtime.session() as session:
        store.get_schedule(session, schedule_id, for_update=True)
        count = backfills.cancel_backfill(
            session, schedule_id, reason=text, now=runtime.clock.now()
        )
        done = Backfill(schedule_id, cancelled=count)
        if on_record is not None:
            on_record(session, done)
    return done
