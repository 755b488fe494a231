"""Run now, pause, resume, and the run history of a schedule or one run.

"Run now" records a ``pending`` execution (trigger ``manual``, a fresh Celery task id)
and its audit row in one transaction, commits, then sends through the runtime's
``Dispatcher`` port (the API never imports Celery) and records ``sent_at``. If the broker
refuses the message, the row is finished as ``failed`` with the reason (not counted as a
run: it never started). If this process dies between the commit and the send, the row
stays ``pending`` unsent until the reaper ends it as ``lost``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.errors import HTTPError, error_item, validation_failed
from dataforge_scheduler.api.handlers.common import execution_out, page_of, task_out
from dataforge_scheduler.api.http import Response, json_response
from dataforge_scheduler.api.schemas.runs import (
    ExecutionDetail,
    ExecutionOut,
    ExecutionPage,
    ListExecutionsQuery,
    RunAccepted,
    RunRequest,
)
from dataforge_scheduler.core import headers as headers_
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.errors import InvalidParams, UnknownTask
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.audit import AuditAction, record_audit, schedule_snapshot
from dataforge_scheduler.sql.manual_runs import create_manual_execution, mark_manual_sent

__all__ = [
    "get_execution",
    "list_task_executions",
    "pause_task",
    "resume_task",
    "run_task",
]

logger = logging.getLogger(__name__)

_TARGET = "schedule"


def _run_kwargs(
    ctx: Context, task_name: str, stored: dict[str, Any], body: RunRequest | None
) -> dict[str, Any]:
    registry = ctx.runtime.registry
    override = (body.kwargs if body is not None else None) or {}
    try:
        registry.get(task_name)
    except UnknownTask as exc:
        raise HTTPError(422, f"the schedule's task_name cannot run: {exc.message}") from None
    try:
        kwargs = registry.validate_kwargs(task_name, {**stored, **override})
    except InvalidParams as exc:
        items = [
            error_item(["body", "kwargs", *item["loc"][1:]], item["msg"], item["type"])
            for item in exc.errors
        ]
        raise validation_failed(items) from None
    return kwargs


async def run_task(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    body = await ctx.optional_body(RunRequest)
    dispatcher = ctx.runtime.dispatcher
    if dispatcher is None:
        raise HTTPError(503, "no dispatcher is configured: call dataforge_scheduler.setup()")
    celery_task_id = str(uuid.uuid4())
    now = ctx.now()

    def record(session: Session) -> tuple[RunAccepted, dict[str, Any]]:
        row = store.get_schedule(session, schedule_id)
        kwargs = _run_kwargs(ctx, row.task_name, dict(row.handler_kwargs), body)
        kwargs["scheduled_task_id"] = row.id
        execution = create_manual_execution(
            session,
            scheduled_task_id=row.id,
            task_name=row.task_name,
            celery_task_id=celery_task_id,
            kwargs=kwargs,
            now=now,
        )
        accepted = RunAccepted(
            task_id=celery_task_id,
            execution_id=execution.id,
            scheduled_task_id=row.id,
            task_name=row.task_name,
            status=ExecutionStatus.PENDING,
            kwargs=kwargs,
        )
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.RUN,
            target_type=_TARGET,
            target_id=row.id,
            before=None,
            after=accepted.model_dump(mode="json"),
            request_id=ctx.request.request_id,
            now=now,
        )
        options = {"queue": row.queue, "priority": row.priority, "expires": row.expire_seconds}
        return accepted, {key: value for key, value in options.items() if value is not None}

    accepted, options = await ctx.in_session(record)
    headers = {
        headers_.TRIGGER: ExecutionTrigger.MANUAL.value,
        headers_.EXECUTION_ID: accepted.execution_id,
    }
    try:
        await ctx.offload(
            lambda: dispatcher.send(
                accepted.task_name,
                kwargs=dict(accepted.kwargs),
                task_id=celery_task_id,
                options=options,
                headers=headers,
            )
        )
    except Exception as exc:  # any broker failure: record it on the run, answer 503
        logger.warning("sending run %s of schedule %s failed: %s", celery_task_id, schedule_id, exc)
        await _mark_unsent(ctx, celery_task_id, exc)
        raise HTTPError(503, f"the run was recorded but could not be sent: {exc}") from exc
    await _mark_sent(ctx, accepted.execution_id)
    return json_response(accepted, status=202)


async def _mark_sent(ctx: Context, execution_id: int) -> None:
    try:
        await ctx.in_session(lambda session: mark_manual_sent(session, execution_id, now=ctx.now()))
    except Exception:  # the run is on its way; only the reaper's clock starts earlier
        logger.exception("could not record the send of execution %s", execution_id)


async def _mark_unsent(ctx: Context, celery_task_id: str, exc: Exception) -> None:
    def finish(session: Session) -> None:
        store.finish_execution(
            session,
            celery_task_id=celery_task_id,
            status=ExecutionStatus.FAILED,
            now=ctx.now(),
            error=f"not sent: the broker refused the message ({exc})",
        )

    try:
        await ctx.in_session(finish)
    except Exception:  # the database may be the thing that is down; the 503 says enough
        logger.exception("could not mark unsent run %s as failed", celery_task_id)


async def _pause_or_resume(ctx: Context, action: AuditAction) -> Response:
    schedule_id: int = ctx.path["id"]
    timezone = ctx.runtime.settings.celery_timezone
    now = ctx.now()

    def write(session: Session) -> tuple[Any, bool]:
        row = store.get_schedule(session, schedule_id, for_update=True)
        before = schedule_snapshot(row)
        if action is AuditAction.PAUSE:
            row = store.pause_schedule(session, schedule_id, now=now)
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
        )
        return ExecutionPage(**page_of(page, [execution_out(row) for row in page.items]))

    return json_response(await ctx.in_session(read))


async def get_execution(ctx: Context) -> Response:
    execution_id: int = ctx.path["id"]

    def read(session: Session) -> tuple[ExecutionOut, str | None]:
        row = store.get_execution(session, execution_id)
        return execution_out(row), row.log_output

    row, stored = await ctx.in_session(read)
    log: str | None
    if row.status.finished and stored is not None:
        log, count = stored, len(stored.splitlines())
    else:
        # still running (or finished without a stored log): the live lines are the log
        lines = await ctx.offload(ctx.runtime.logbus.read, execution_id)
        if lines:
            log, count = "\n".join(line.text for line in lines), len(lines)
        else:
            log, count = stored, len((stored or "").splitlines())
    return json_response(ExecutionDetail(**row.model_dump(), log=log, log_lines=count))
