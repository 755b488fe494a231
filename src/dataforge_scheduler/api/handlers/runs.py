"""Run now, rerun, cancel, pause, resume, and the run history of a schedule or one run.

"Run now" is ``control.run_now``: the ``pending`` row and its audit row are committed in
one transaction, then the run is published through the runtime's ``Dispatcher`` (the API
never imports Celery) exactly as the beat publishes a slot. A refused send answers 503
and the row says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.errors import HTTPError, error_item, unavailable, validation_failed
from dataforge_scheduler.api.handlers.common import execution_out, page_of, task_out
from dataforge_scheduler.api.http import Response, json_response
from dataforge_scheduler.api.schemas.runs import (
    AllExecutionsQuery,
    CancelRequest,
    CancelResult,
    ExecutionDetail,
    ExecutionOut,
    ExecutionPage,
    ListExecutionsQuery,
    RerunRequest,
    RunAccepted,
    RunRequest,
)
from dataforge_scheduler.api.schemas.tasks import PauseRequest
from dataforge_scheduler.control import Cancellation, ManualRun, cancel_run, rerun, run_now
from dataforge_scheduler.core.enums import AuditAction, ExecutionStatus
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidParams,
    UnknownTask,
)
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.store import Session, record_audit, schedule_snapshot

__all__ = [
    "cancel_execution",
    "get_execution",
    "list_executions",
    "list_task_executions",
    "pause_task",
    "rerun_execution",
    "resume_task",
    "run_task",
]

logger = logging.getLogger(__name__)

_TARGET = "schedule"


async def run_task(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    body = await ctx.optional_body(RunRequest)
    override = (body.kwargs if body is not None else None) or {}
    skip_next = body is not None and body.skip_next
    now = ctx.now()

    def audit(session: Session, run: ClaimedSlot, schedule: ScheduledTask | None) -> None:
        after = _accepted(run, schedule_id).model_dump(mode="json")
        if skip_next:
            after["skip_next"] = True
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.RUN,
            target_type=_TARGET,
            target_id=schedule_id,
            before=None,
            after=after,
            request_id=ctx.request.request_id,
            now=now,
        )

    done = await _offload_run(
        ctx,
        lambda: run_now(
            ctx.runtime,
            schedule_id=schedule_id,
            kwargs=override,
            skip_next=skip_next,
            on_record=audit,
        ),
        whose="the schedule's",
    )
    accepted = _accepted(done.run, schedule_id).model_copy(
        update={"skipped_slot": done.skipped_slot}
    )
    return json_response(accepted, status=202)


async def cancel_execution(ctx: Context) -> Response:
    execution_id: int = ctx.path["id"]
    body = await ctx.optional_body(CancelRequest)
    reason = body.reason if body is not None else None
    force = body.force if body is not None else False
    now = ctx.now()

    def audit(session: Session, before: ExecutionStatus, done: Cancellation) -> None:
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.CANCEL,
            target_type="execution",
            target_id=execution_id,
            before={"status": str(before)},
            after=_cancelled(done).model_dump(mode="json"),
            request_id=ctx.request.request_id,
            now=now,
        )

    try:
        done = await ctx.offload(
            lambda: cancel_run(
                ctx.runtime,
                execution_id,
                reason=reason,
                by=ctx.principal_name,
                force=force,
                on_record=audit,
            )
        )
    except ConfigurationError as exc:
        raise _no_dispatcher(exc) from None
    except BackendUnavailable as exc:
        raise HTTPError(
            503, f"nothing was cancelled: the revoke could not be sent ({unavailable(exc)})"
        ) from exc
    return json_response(_cancelled(done))


async def rerun_execution(ctx: Context) -> Response:
    execution_id: int = ctx.path["id"]
    body = await ctx.optional_body(RerunRequest)
    override = (body.kwargs if body is not None else None) or {}
    now = ctx.now()

    def audit(session: Session, run: ClaimedSlot, schedule: ScheduledTask | None) -> None:
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.RERUN,
            target_type="execution",
            target_id=execution_id,
            before=None,
            after=_accepted(run, run.scheduled_task_id, rerun_of=execution_id).model_dump(
                mode="json"
            ),
            request_id=ctx.request.request_id,
            now=now,
        )

    done = await _offload_run(
        ctx,
        lambda: rerun(ctx.runtime, execution_id, kwargs=override, on_record=audit),
        whose="the run's",
    )
    accepted = _accepted(done.run, done.run.scheduled_task_id, rerun_of=execution_id)
    return json_response(accepted, status=202)


async def _offload_run(ctx: Context, call: Callable[[], ManualRun], *, whose: str) -> ManualRun:
    """Record and send a manual run off the event loop, its errors as HTTP answers: 422
    for a task or kwargs that cannot run, 503 for no dispatcher or a refused send."""
    try:
        return await ctx.offload(call)
    except UnknownTask as exc:
        raise HTTPError(422, f"{whose} task_name cannot run: {exc.message}") from None
    except InvalidParams as exc:
        items = [
            error_item(["body", "kwargs", *item["loc"][1:]], item["msg"], item["type"])
            for item in exc.errors
        ]
        raise validation_failed(items) from None
    except ConfigurationError as exc:
        raise _no_dispatcher(exc) from None
    except BackendUnavailable as exc:
        raise HTTPError(
            503, f"the run was recorded but could not be sent: {unavailable(exc)}"
        ) from exc


def _no_dispatcher(exc: ConfigurationError) -> Exception:
    """503 for a runtime without dispatcher; any other configuration error as it is."""
    if exc.field != "dispatcher":
        return exc
    return HTTPError(503, "no dispatcher is configured: call dataforge_scheduler.setup()")


def _cancelled(done: Cancellation) -> CancelResult:
    return CancelResult(
        execution_id=done.execution_id,
        task_id=done.celery_task_id,
        status=done.status,
        terminating=done.status is ExecutionStatus.RUNNING,
        reason=done.reason,
    )


def _accepted(
    run: ClaimedSlot, schedule_id: int | None, *, rerun_of: int | None = None
) -> RunAccepted:
    return RunAccepted(
        task_id=run.celery_task_id,
        execution_id=run.execution_id,
        scheduled_task_id=schedule_id,
        task_name=run.task_name,
        status=ExecutionStatus.PENDING,
        kwargs=run.kwargs,
        rerun_of=rerun_of,
    )


async def _pause_or_resume(ctx: Context, action: AuditAction) -> Response:
    schedule_id: int = ctx.path["id"]
    timezone = ctx.runtime.settings.celery_timezone
    note: str | None = None
    if action is AuditAction.PAUSE:
        body = await ctx.optional_body(PauseRequest)
        note = None if body is None else body.note
    now = ctx.now()

    def write(session: Session) -> tuple[Any, bool]:
        row = store.get_schedule(session, schedule_id, for_update=True)
        before = schedule_snapshot(row)
        if action is AuditAction.PAUSE:
            row = store.pause_schedule(session, schedule_id, now=now, note=note)
        else:
            row = store.resume_schedule(session, schedule_id, now=now, default_timezone=timezone)
        after = schedule_snapshot(row)
        if after != before:
            record_audit(
                session,
                principal=ctx.principal_name,
                action=action,
                target_type=_TARGET,
                target_id=schedule_id,
                before=before,
                after=after,
                request_id=ctx.request.request_id,
                now=now,
            )
        return task_out(row), after != before

    row, changed = await ctx.in_session(write)
    if changed:
        await ctx.notify(schedule_id)
    return json_response(row)


async def pause_task(ctx: Context) -> Response:
    return await _pause_or_resume(ctx, AuditAction.PAUSE)


async def resume_task(ctx: Context) -> Response:
    return await _pause_or_resume(ctx, AuditAction.RESUME)


async def list_task_executions(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    query = ctx.query(ListExecutionsQuery)

    def read(session: Session) -> ExecutionPage:
        store.get_schedule(session, schedule_id)
        page = store.list_executions(
            session,
            scheduled_task_id=schedule_id,
            status=query.status,
            page=query.page,
            page_size=query.capped_size,
            cursor=query.cursor,
            count=query.count,
        )
        return ExecutionPage(**page_of(page, [execution_out(row) for row in page.items]))

    return json_response(await ctx.in_session(read))


async def list_executions(ctx: Context) -> Response:
    query = ctx.query(AllExecutionsQuery)

    def read(session: Session) -> ExecutionPage:
        page = store.list_executions(
            session,
            scheduled_task_id=query.scheduled_task_id,
            status=query.status,
            task_name=query.task_name,
            trigger=query.trigger,
            since=query.since,
            until=query.until,
            page=query.page,
            page_size=query.capped_size,
            cursor=query.cursor,
            count=query.count,
        )
        return ExecutionPage(**page_of(page, [execution_out(row) for row in page.items]))

    return json_response(await ctx.in_session(read))


async def get_execution(ctx: Context) -> Response:
    execution_id: int = ctx.path["id"]

    def read(session: Session) -> tuple[ExecutionOut, str | None, list[int]]:
        row = store.get_execution(session, execution_id)
        return execution_out(row), row.log_output, store.rerun_ids(session, execution_id)

    row, stored, reruns = await ctx.in_session(read)
    log: str | None
    if row.status.finished and stored is not None:
        log, count = stored, len(stored.splitlines())
    else:
        # still running (or finished without a stored log): the live lines are the log
        lines = await ctx.offload(ctx.runtime.logbus.read, row.celery_task_id)
        if lines:
            log, count = "\n".join(line.text for line in lines), len(lines)
        else:
            log, count = stored, len((stored or "").splitlines())
    detail = ExecutionDetail(**row.model_dump(), log=log, log_lines=count, reruns=reruns)
    return json_response(detail)
