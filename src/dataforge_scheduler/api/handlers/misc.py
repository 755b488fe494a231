"""The registry in the seed's shape, schedule previews, health and the audit trail."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.handlers.common import page_of
from dataforge_scheduler.api.http import Response, json_response
from dataforge_scheduler.api.schemas.misc import (
    AuditOut,
    AuditPage,
    AuditQuery,
    Health,
    OutboxHealth,
    PreviewRequest,
    PreviewResponse,
    RegisteredTasks,
)
from dataforge_scheduler.core.timing import refuse_past_run_at
from dataforge_scheduler.core.triggers import fire_times, trigger_for, validate_timezone
from dataforge_scheduler.errors import DataForgeError
from dataforge_scheduler.sql.store import Session, list_audit

__all__ = ["health", "list_audit_entries", "preview_schedule", "registered_tasks"]

logger = logging.getLogger(__name__)


async def registered_tasks(ctx: Context) -> Response:
    return json_response(RegisteredTasks.model_validate(ctx.runtime.registry.as_seed_dict()))


@dataclass(frozen=True)
class _Probe:
    """The trigger fields of an unsaved schedule (a ``ScheduleLike``)."""

    task_type: str
    cron_expression: str | None
    interval_seconds: int | None
    run_at: datetime | None
    timezone: str | None
    start_at: datetime | None
    end_at: datetime | None
    created_at: datetime | None


def _preview(body: PreviewRequest, *, now: datetime, default_timezone: str) -> PreviewResponse:
    zone = validate_timezone(body.timezone or default_timezone)
    refuse_past_run_at(body.task_type, body.run_at, now=now)
    probe = _Probe(**body.model_dump(exclude={"count"}), created_at=now)
    trigger = trigger_for(probe, default_timezone)
    try:
        fires = fire_times(trigger, now, body.count)
    except OverflowError:  # a grid that runs past the calendar: what fits is the answer
        fires = []
    local = [fire.astimezone(zone) for fire in fires]
    return PreviewResponse(
        timezone=zone.key, fire_times=local, next_run_at=local[0] if local else None
    )


async def preview_schedule(ctx: Context) -> Response:
    body = await ctx.body(PreviewRequest)
    settings = ctx.runtime.settings
    result = await ctx.offload(
        lambda: _preview(body, now=ctx.now(), default_timezone=settings.celery_timezone)
    )
    return json_response(result)


def _public(backend: str, state: str | None) -> str:
    """A backend's state as the public endpoint tells it: ``ok`` or ``unreachable``; the
    driver's error (hosts, ports, users) goes to the log only."""
    if state is not None and state.startswith("ok"):
        return state
    logger.warning("health: %s is unreachable: %s", backend, state)
    return "unreachable"


#: An outbox whose oldest record is older than this has no writer keeping up with it.
OUTBOX_WARN_SECONDS = 60.0


def _outbox(ctx: Context) -> OutboxHealth | None:
    try:
        stats = ctx.runtime.backend.journal.stats()
    except DataForgeError as exc:
        logger.warning("health: cannot read the history outbox: %s", exc)
        return None
    age = stats.oldest_age_seconds
    warning = None
    if age is not None and age >= OUTBOX_WARN_SECONDS:
        warning = f"the oldest run-history record waits {age:.0f} s for a history writer"
    return OutboxHealth(waiting=stats.length, oldest_age_seconds=age, warning=warning)


async def health(ctx: Context) -> Response:
    report = await ctx.offload(ctx.runtime.check)
    database = _public("the database", report.get("database"))
    redis = _public("Redis", report.get("redis"))
    healthy = database == "ok" and redis.startswith("ok")
    outbox = await ctx.offload(_outbox, ctx) if redis.startswith("ok") else None
    body = Health(
        status="ok" if healthy else "degraded", database=database, redis=redis, outbox=outbox
    )
    return json_response(body, status=200 if healthy else 503)


async def list_audit_entries(ctx: Context) -> Response:
    query = ctx.query(AuditQuery)

    def read(session: Session) -> AuditPage:
        page = list_audit(
            session,
            action=query.action,
            target_type=query.target_type,
            target_id=query.target_id,
            page=query.page,
            page_size=query.capped_size,
        )
        items = [AuditOut.model_validate(row, from_attributes=True) for row in page.items]
        return AuditPage(**page_of(page, items))

    return json_response(await ctx.in_session(read))
