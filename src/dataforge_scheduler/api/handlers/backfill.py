"""Backfill over HTTP: ``POST /tasks/{id}/backfill`` creates (or, as a dry run, lists)
the runs a schedule would have had in a past range, and ``POST
/tasks/{id}/backfill/cancel`` revokes the ones still waiting. Both are
``control.backfill`` and ``control.cancel_backfill``; the audit row is written in the
same transaction. Nothing is sent here: the beat sends a backfill's slots one at a time.
"""

from __future__ import annotations

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.http import Response, json_response
from dataforge_scheduler.api.schemas.runs import (
    BackfillCancelled,
    BackfillCancelRequest,
    BackfillRequest,
    BackfillResult,
    BackfillSlotOut,
)
from dataforge_scheduler.control import Backfill, backfill, cancel_backfill
from dataforge_scheduler.core.backfill import BackfillSlot
from dataforge_scheduler.core.enums import AuditAction
from dataforge_scheduler.sql.store import Session, record_audit

__all__ = ["backfill_task", "cancel_task_backfill"]


async def backfill_task(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    body = await ctx.body(BackfillRequest)
    now = ctx.now()

    def audit(session: Session, done: Backfill) -> None:
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.BACKFILL,
            target_type="schedule",
            target_id=schedule_id,
            before=None,
            after={
                "start": body.start.isoformat(),
                "end": body.end.isoformat(),
                "created": len(done.created),
                "existing": len(done.existing),
            },
            request_id=ctx.request.request_id,
            now=now,
        )

    done = await ctx.offload(
        lambda: backfill(
            ctx.runtime,
            schedule_id,
            start=body.start,
            end=body.end,
            dry_run=body.dry_run,
            on_record=audit,
        )
    )
    return json_response(
        BackfillResult(
            scheduled_task_id=schedule_id,
            start=body.start,
            end=body.end,
            dry_run=body.dry_run,
            created=[_slot(slot) for slot in done.created],
            existing=[_slot(slot) for slot in done.existing],
        )
    )


async def cancel_task_backfill(ctx: Context) -> Response:
    schedule_id: int = ctx.path["id"]
    body = await ctx.optional_body(BackfillCancelRequest)
    reason = None if body is None else body.reason
    now = ctx.now()

    def audit(session: Session, done: Backfill) -> None:
        record_audit(
            session,
            principal=ctx.principal_name,
            action=AuditAction.CANCEL,
            target_type="schedule",
            target_id=schedule_id,
            before=None,
            after={"backfill_cancelled": done.cancelled, "reason": reason},
            request_id=ctx.request.request_id,
            now=now,
        )

    done = await ctx.offload(
        lambda: cancel_backfill(
            ctx.runtime, schedule_id, reason=reason, by=ctx.principal_name, on_record=audit
        )
    )
    return json_response(BackfillCancelled(scheduled_task_id=schedule_id, cancelled=done.cancelled))


def _slot(slot: BackfillSlot) -> BackfillSlotOut:
    return BackfillSlotOut(
        scheduled_for=slot.scheduled_for, execution_id=slot.execution_id, status=slot.status
    )
