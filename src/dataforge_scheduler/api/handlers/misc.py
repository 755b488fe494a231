"""The registry in the seed's shape, schedule previews, health and the audit trail."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.handlers.common import page_of
from dataforge_scheduler.api.http import Response, json_response
from dataforge_scheduler.api.schemas.misc import (
    AuditOut,
    AuditPage,
    AuditQuery,
    ExcludedSlot,
    Health,
    OutboxHealth,
    PreviewRequest,
    PreviewResponse,
    RegisteredTasks,
)
from dataforge_scheduler.api.schemas.tasks import plain_windows
from dataforge_scheduler.core.exclusions import ExcludingTrigger
from dataforge_scheduler.core.timing import refuse_past_run_at
from dataforge_scheduler.core.triggers import fire_times, trigger_for, validate_timezone
from dataforge_scheduler.errors import DataForgeError
from dataforge_scheduler.sql.store import Session, list_audit

__all__ = ["health", "list_audit_entries", "preview_schedule", "registered_tasks"]

if TYPE_CHECKING:
    from dataforge_scheduler.runtime import Runtime

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
    exclusions: list[dict[str, Any]] | None = None


def _preview(body: PreviewRequest, *, now: datetime, default_timezone: str) -> PreviewResponse:
    zone = validate_timezone(body.timezone or default_timezone)
    refuse_past_run_at(body.task_type, body.run_at, now=now)
    fields = body.model_dump(exclude={"count", "exclusions"})
    probe = _Probe(**fields, created_at=now, exclusions=plain_windows(body.exclusions))
    trigger = trigger_for(probe, default_timezone)
    excluded: list[ExcludedSlot] = []
    try:
        if isinstance(trigger, ExcludingTrigger):
            fires = _walk_excluding(trigger, now, body.count, excluded, zone)
        else:
            fires = fire_times(trigger, now, body.count)
    except OverflowError:  # a grid that runs past the calendar: what fits is the answer
        fires = []
    local = [fire.astimezone(zone) for fire in fires]
    return PreviewResponse(
        timezone=zone.key,
        fire_times=local,
        next_run_at=local[0] if local else None,
        excluded=excluded,
    )


def _walk_excluding(
    trigger: ExcludingTrigger,
    now: datetime,
    count: int,
    excluded: list[ExcludedSlot],
    zone: Any,
) -> list[datetime]:
    """The next ``count`` fires of ``trigger``, noting in ``excluded`` (at most
    ``MAX_EXCLUDED_SHOWN``) the slots its windows keep out before the last of them."""
    fires: list[datetime] = []
    cursor = now
    while len(fires) < count:
        slot = trigger.inner.next_after(cursor)
        if slot is None:
            break
        covered = trigger.excluded_by(slot)
        if covered is None:
            fires.append(slot)
            cursor = slot
        elif len(excluded) < MAX_EXCLUDED_SHOWN:
            excluded.append(ExcludedSlot(at=slot.astimezone(zone), window=covered[0].name))
            cursor = slot
        else:  # enough shown: jump past the rest as the scheduler does
            following = trigger.next_after(slot)
            if following is None:
                break
            fires.append(following)
            cursor = following
    return fires


#: How many excluded slots a preview lists.
MAX_EXCLUDED_SHOWN = 100


async def preview_schedule(ctx: Context) -> Response:
    body = await ctx.body(PreviewRequest)
    settings = ctx.runtime.settings
    result = await ctx.offload(
        lambda: _preview(body, now=ctx.now(), default_timezone=settings.celery_timezone)
    )
    return json_response(result)


#: An outbox whose oldest record is older than this has no writer keeping up with it.
OUTBOX_WARN_SECONDS = 60.0


def check_backends(runtime: Runtime) -> dict[str, Any]:
    """What ``/health`` reports, asked of the backends (on the health probe's thread):
    ``Runtime.check`` and, when Redis answers, the history outbox's stats."""
    report: dict[str, Any] = dict(runtime.check())
    if str(report.get("redis", "")).startswith("ok"):
        try:
            report["outbox"] = runtime.backend.journal.stats()
        except DataForgeError as exc:
            logger.warning("health: cannot read the history outbox: %s", exc)
    return report


def _outbox(stats: Any) -> OutboxHealth | None:
    if stats is None:
        return None
    age = stats.oldest_age_seconds
    warning = None
    if age is not None and age >= OUTBOX_WARN_SECONDS:
        warning = f"the oldest run-history record waits {age:.0f} s for a history writer"
    return OutboxHealth(waiting=stats.length, oldest_age_seconds=age, warning=warning)


async def health(ctx: Context) -> Response:
    """Cached, single-flight and time-bounded: see ``api.health``."""
    report = await ctx.state.health.report()
    body = Health(
        status="ok" if report.healthy else "degraded",
        database=report.database,
        redis=report.redis,
        outbox=_outbox(report.outbox) if report.redis.startswith("ok") else None,
    )
    return json_response(body, status=200 if report.healthy else 503)


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
            cursor=query.cursor,
            count=query.count,
        )
        items = [AuditOut.model_validate(row, from_attributes=True) for row in page.items]
        return AuditPage(**page_of(page, items))

    return json_response(await ctx.in_session(read))
