"""Locks: every held lock, one schedule's lock, and the admin's force release.

A force release and its audit row share one database transaction: the audit row is
written only if the release happened, and a failed commit is reported (the lock itself
lives in Redis, so the two cannot be one atomic act; the audit records what was done).
"""

from __future__ import annotations

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.handlers.common import lock_out
from dataforge_scheduler.api.http import Response, json_response
from dataforge_scheduler.api.schemas.runs import LockList, LockState, ReleaseResult
from dataforge_scheduler.core.enums import AuditAction
from dataforge_scheduler.redis.keys import schedule_scope
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.store import Session, record_audit

__all__ = ["get_lock", "list_locks", "release_lock"]


async def list_locks(ctx: Context) -> Response:
    held = await ctx.offload(ctx.runtime.locks.list)
    items = [lock_out(info) for info in held]
    return json_response(LockList(items=items, total=len(items)))


async def get_lock(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    await ctx.in_session(lambda session: store.get_schedule(session, schedule_id))
    info = await ctx.offload(ctx.runtime.locks.get, schedule_scope(schedule_id))
    lock = None if info is None else lock_out(info)
    return json_response(
        LockState(scheduled_task_id=schedule_id, locked=lock is not None, lock=lock)
    )


async def release_lock(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    locks = ctx.runtime.locks
    now = ctx.now()

    def write(session: Session) -> ReleaseResult:
        store.get_schedule(session, schedule_id)
        released = locks.force_release(schedule_scope(schedule_id))
        result = ReleaseResult(
            scheduled_task_id=schedule_id,
            released=released is not None,
            lock=None if released is None else lock_out(released),
        )
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.RELEASE_LOCK,
            target_type="schedule",
            target_id=schedule_id,
            before=None if result.lock is None else result.lock.model_dump(mode="json"),
            after={"released": result.released},
            request_id=ctx.request.request_id,
            now=now,
        )
        return result

    return json_response(await ctx.in_session(write))
