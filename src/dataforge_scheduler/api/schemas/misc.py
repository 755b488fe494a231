"""The registry in the seed's shape, schedule previews, health and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from dataforge_scheduler.api.schemas.common import PageFields, PageQuery, UTCDateTimeIn
from dataforge_scheduler.api.schemas.tasks import ExclusionWindow
from dataforge_scheduler.core.enums import AuditAction, TaskType

__all__ = [
    "AuditOut",
    "AuditPage",
    "AuditQuery",
    "ExcludedSlot",
    "Health",
    "OutboxHealth",
    "PreviewRequest",
    "PreviewResponse",
    "RegisteredParam",
    "RegisteredTask",
    "RegisteredTasks",
]


class RegisteredParam(BaseModel):
    """A param in the seed's shape."""

    name: str
    type: str
    required: bool
    label: str


class RegisteredTask(BaseModel):
    """A registered task in the seed's shape."""

    name: str
    description: str
    category: str
    params: list[RegisteredParam]


class RegisteredTasks(RootModel[dict[str, RegisteredTask]]):
    """``REGISTERED_TASKS`` as the seed served it: Celery task name to description."""


class PreviewRequest(BaseModel):
    """A schedule's trigger fields, to validate and preview without saving."""

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType
    cron_expression: str | None = Field(None, max_length=255)
    interval_seconds: int | None = Field(None, strict=True, gt=0, lt=2**31)
    run_at: UTCDateTimeIn | None = None
    timezone: str | None = Field(None, max_length=64)
    start_at: UTCDateTimeIn | None = None
    end_at: UTCDateTimeIn | None = None
    exclusions: list[ExclusionWindow] | None = Field(None, max_length=50)
    count: int = Field(10, strict=True, ge=1, le=100, description="how many fire times to return")


class ExcludedSlot(BaseModel):
    """A slot an exclusion window keeps out, and the window's name."""

    at: datetime
    window: str


class PreviewResponse(BaseModel):
    """The next fire times, in ``timezone`` (empty for ``manual`` or a finished window),
    and the slots exclusion windows keep out before the last of them (at most 100)."""

    timezone: str
    fire_times: list[datetime]
    next_run_at: datetime | None
    excluded: list[ExcludedSlot] = Field(default_factory=list)


class OutboxHealth(BaseModel):
    """The run-history outbox: records waiting for a history writer (a warning, never a
    failure: history waits there safely while the database is away)."""

    waiting: int
    oldest_age_seconds: float | None
    warning: str | None = None


class Health(BaseModel):
    """Reachability of the database and Redis, and how far the history writers are behind."""

    status: Literal["ok", "degraded"]
    database: str
    redis: str
    outbox: OutboxHealth | None = None


class AuditOut(BaseModel):
    """One recorded change."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    principal: str
    action: str
    target_type: str
    target_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


class AuditPage(PageFields):
    """One page of the audit trail, newest first."""

    items: list[AuditOut]


class AuditQuery(PageQuery):
    """Filters of ``GET /audit``."""

    action: AuditAction | None = None
    target_type: str | None = Field(None, max_length=32)
    target_id: int | None = Field(None, ge=1, lt=2**63)
