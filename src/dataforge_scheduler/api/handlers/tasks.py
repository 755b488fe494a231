"""Schedules: list, read, create, update (PUT and PATCH) and delete.

Writes validate the body (pydantic), then the registry (``task_name`` registered,
``handler_kwargs`` fitting its params), then let the store validate the trigger and
compute ``next_run_at``; the audit row is written in the same transaction, and after the
commit a change notice wakes the beat schedulers.
"""

from __future__ import annotations

from typing import Any

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.errors import HTTPError
from dataforge_scheduler.api.handlers.common import (
    execution_out,
    lock_out,
    page_of,
    stored_kwargs,
    task_out,
)
from dataforge_scheduler.api.http import Response, json_response
from dataforge_scheduler.api.schemas.runs import ExecutionOut
from dataforge_scheduler.api.schemas.tasks import (
    ListTasksQuery,
    RegisteredTaskInfo,
    TaskCreate,
    TaskDetail,
    TaskOut,
    TaskPage,
    TaskUpdate,
    plain_windows,
)
from dataforge_scheduler.core.enums import AuditAction, OverlapPolicy
from dataforge_scheduler.errors import ConflictError, ExecutionNotFound
from dataforge_scheduler.redis.keys import schedule_scope
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.store import Session, record_audit, schedule_snapshot

__all__ = ["create_task", "delete_task", "get_task", "list_tasks", "update_task"]

_TARGET = "schedule"


async def list_tasks(ctx: Context) -> Response:
    query = ctx.query(ListTasksQuery)
    task_names: list[str] | None = None
    if query.category is not None:
        registry = ctx.runtime.registry
        task_names = [n for n in registry.names() if registry.get(n).category == query.category]

    def read(session: Session) -> TaskPage:
        page = store.list_schedules(
            session,
            status=query.status,
            task_type=query.task_type,
            task_names=task_names,
            search=query.search or None,
            page=query.page,
            page_size=query.capped_size,
            sort=query.sort,
            cursor=query.cursor,
            count=query.count,
        )
        return TaskPage(**page_of(page, [task_out(row) for row in page.items]))

    return json_response(await ctx.in_session(read))


async def get_task(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]

    def read(session: Session) -> tuple[TaskOut, ExecutionOut | None]:
        row = store.get_schedule(session, schedule_id)
        last = None
        if row.last_execution_id is not None:
            try:
                last = execution_out(store.get_execution(session, row.last_execution_id))
            except ExecutionNotFound:  # removed by retention; the counters remain
                last = None
        return task_out(row), last

    task, last = await ctx.in_session(read)
    lock = await ctx.offload(ctx.runtime.locks.get, schedule_scope(schedule_id))
    registry = ctx.runtime.registry
    registered = None
    if task.task_name in registry:
        registered = RegisteredTaskInfo(**registry.get(task.task_name).to_dict())
    detail = TaskDetail(
        **task.model_dump(),
        locked=lock is not None,
        lock=None if lock is None else lock_out(lock),
        last_execution=last,
        registered=registered,
    )
    return json_response(detail)


async def create_task(ctx: Context) -> Response:
    body = await ctx.body(TaskCreate)
    fields = body.model_dump()
    fields["exclusions"] = plain_windows(body.exclusions)
    fields["handler_kwargs"] = stored_kwargs(
        ctx.runtime.registry, body.task_name, body.handler_kwargs
    )
    if body.overlap_policy is None:  # the task's default (stored_kwargs knows it exists)
        fields["overlap_policy"] = ctx.runtime.registry.get(body.task_name).overlap_policy or (
            OverlapPolicy.SKIP
        )
    settings = ctx.runtime.settings
    now = ctx.now()

    def write(session: Session) -> Any:
        row = store.create_schedule(
            session, fields, now=now, default_timezone=settings.celery_timezone
        )
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.CREATE,
            target_type=_TARGET,
            target_id=row.id,
            before=None,
            after=schedule_snapshot(row),
            request_id=ctx.request.request_id,
            now=now,
        )
        return task_out(row)

    created = await ctx.in_session(write)
    await ctx.notify(created.id)
    return json_response(created, status=201, headers=[("location", f"tasks/{created.id}")])


async def update_task(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    body = await ctx.body(TaskUpdate)
    changes = body.model_dump(exclude_unset=True)
    if "exclusions" in changes:
        changes["exclusions"] = plain_windows(body.exclusions)
    expected_version = changes.pop("expected_version", None)
    registry = ctx.runtime.registry
    settings = ctx.runtime.settings
    now = ctx.now()

    def write(session: Session) -> Any:
        row = store.get_schedule(session, schedule_id, for_update=True)
        if row.is_system:
            _refuse_system_change(row, changes)
        before = schedule_snapshot(row)
        touches_task = "task_name" in changes or "handler_kwargs" in changes
        if touches_task and changes.get("task_name", row.task_name) is not None:
            kwargs = changes.get("handler_kwargs", row.handler_kwargs)
            checked = stored_kwargs(registry, changes.get("task_name", row.task_name), kwargs or {})
            if changes.get("handler_kwargs") is not None:
                changes["handler_kwargs"] = checked
        row = store.update_schedule(
            session,
            schedule_id,
            changes,
            now=now,
            default_timezone=settings.celery_timezone,
            expected_version=expected_version,
        )
        after = schedule_snapshot(row)
        if after != before:
            record_audit(
                session,
                principal=ctx.principal_name,
                action=AuditAction.UPDATE,
                target_type=_TARGET,
                target_id=row.id,
                before=before,
                after=after,
                request_id=ctx.request.request_id,
                now=now,
            )
        return task_out(row), after != before

    updated, changed = await ctx.in_session(write)
    if changed:
        await ctx.notify(schedule_id)
    return json_response(updated)


#: What the API may change on a system schedule (the reaper, retention): when it runs,
#: whether it is paused, and its description. Its task, kwargs, name and policies are
#: the library's, and it cannot be deleted.
SYSTEM_EDITABLE = frozenset(
    {"description", "status", "task_type", "cron_expression", "interval_seconds", "timezone"}
)


def _refuse_system_change(row: Any, changes: dict[str, Any]) -> None:
    refused = sorted(
        name
        for name, value in changes.items()
        if name not in SYSTEM_EDITABLE and value != getattr(row, name, None)
    )
    if refused:
        raise HTTPError(
            403,
            f"schedule {row.id} ({row.name!r}) is a system schedule: only "
            f"{', '.join(sorted(SYSTEM_EDITABLE))} may change, not {', '.join(refused)}",
        )
    task_type = changes.get("task_type")
    if task_type is not None and task_type not in ("cron", "interval"):
        raise HTTPError(
            403,
            f"schedule {row.id} ({row.name!r}) is a system schedule: it must keep running "
            f"on a cron or an interval, not {task_type}",
        )


async def delete_task(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    now = ctx.now()

    def write(session: Session) -> None:
        row = store.get_schedule(session, schedule_id, for_update=True)
        before = schedule_snapshot(row)
        try:
            store.delete_schedule(session, schedule_id)
        except ConflictError as exc:
            if getattr(exc, "field", None) == "is_system":
                raise HTTPError(403, exc.message) from None
            raise
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.DELETE,
            target_type=_TARGET,
            target_id=schedule_id,
            before=before,
            after=None,
            request_id=ctx.request.request_id,
            now=now,
        )

    await ctx.in_session(write)
    await ctx.notify(schedule_id)
    return Response(status=204, media_type=None)
