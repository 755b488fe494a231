"""Runs over HTTP: "run now", executions (with their log) and locks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dataforge_scheduler.api.schemas.common import PageFields, PageQuery, UTCDateTimeIn
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger

__all__ = [
    "AllExecutionsQuery",
    "BackfillCancelRequest",
    "BackfillCancelled",
    "BackfillRequest",
    "BackfillResult",
    "BackfillSlotOut",
    "CancelRequest",
    "CancelResult",
    "ExecutionDetail",
    "ExecutionOut",
    "ExecutionPage",
    "ListExecutionsQuery",
    "LockList",
    "LockOut",
    "LockState",
    "LogStreamQuery",
    "ReleaseResult",
    "RerunRequest",
    "RunAccepted",
    "RunRequest",
]


class RunRequest(BaseModel):
    """Optional body of ``POST /tasks/{id}/run``: kwargs that override the schedule's
    ``handler_kwargs`` for this run, validated against the task's params."""

    model_config = ConfigDict(extra="forbid")

    kwargs: dict[str, Any] | None = None
    skip_next: bool = Field(
        False,
        strict=True,
        description="run early: the schedule's next slot is not sent (recorded skipped, "
        "'ran early')",
    )


class RerunRequest(BaseModel):
    """Optional body of ``POST /executions/{id}/rerun``: kwargs that override the
    original run's kwargs for the new run, validated against the task's params."""

    model_config = ConfigDict(extra="forbid")

    kwargs: dict[str, Any] | None = None


class RunAccepted(BaseModel):
    """A run that was recorded (``pending``) and sent to the workers."""

    task_id: str = Field(description="the Celery task id of the run")
    execution_id: int
    scheduled_task_id: int | None = Field(
        description="the schedule the run belongs to (null: a rerun of a run whose "
        "schedule was deleted)"
    )
    task_name: str
    status: ExecutionStatus
    kwargs: dict[str, Any]
    rerun_of: int | None = Field(None, description="the execution this run runs again")
    skipped_slot: datetime | None = Field(
        None, description="the scheduled slot this run took the place of (skip_next)"
    )


class BackfillRequest(BaseModel):
    """Body of ``POST /tasks/{id}/backfill``: the past range ``[start, end)`` whose slots
    to run, as ISO 8601 date-times with an offset."""

    model_config = ConfigDict(extra="forbid")

    start: UTCDateTimeIn = Field(description="the first instant covered (included)")
    end: UTCDateTimeIn = Field(description="the end of the range (excluded); not in the future")
    dry_run: bool = Field(False, strict=True, description="list the slots, create nothing")


class BackfillSlotOut(BaseModel):
    """One slot of a backfill and its run (none yet for a dry run's new slots)."""

    scheduled_for: datetime
    execution_id: int | None
    status: ExecutionStatus | None


class BackfillResult(BaseModel):
    """The slots a backfill created (``queued``, sent one at a time, oldest first; a dry
    run's would-be slots) and the ones it left alone because they already had a run."""

    scheduled_task_id: int
    start: datetime
    end: datetime
    dry_run: bool
    created: list[BackfillSlotOut]
    existing: list[BackfillSlotOut] = Field(
        description="slots that already had a run (any trigger): left alone"
    )


class BackfillCancelRequest(BaseModel):
    """Optional body of ``POST /tasks/{id}/backfill/cancel``."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        None, min_length=1, max_length=500, description="why, recorded on each slot's row"
    )


class BackfillCancelled(BaseModel):
    """How many waiting backfill slots were revoked (a run already sent goes on)."""

    scheduled_task_id: int
    cancelled: int


class CancelRequest(BaseModel):
    """Optional body of ``POST /executions/{id}/cancel``."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        None, min_length=1, max_length=500, description="why, recorded on the run's row"
    )
    force: bool = Field(
        False,
        strict=True,
        description="stop a run going with SIGKILL instead of SIGTERM (for a body that "
        "ignores SIGTERM; it cannot clean up)",
    )


class CancelResult(BaseModel):
    """A cancelled run: ``revoked`` at once if it had not started, else ``running``
    while its worker stops it (``terminating``); its row then ends ``revoked``."""

    execution_id: int
    task_id: str = Field(description="the Celery task id of the run")
    status: ExecutionStatus
    terminating: bool
    reason: str = Field(description="what the run's row records")


class ExecutionOut(BaseModel):
    """One run of a task."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    scheduled_task_id: int | None
    scheduled_for: datetime | None
    task_name: str
    celery_task_id: str
    trigger: ExecutionTrigger
    status: ExecutionStatus
    created_at: datetime
    sent_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    worker_hostname: str | None
    worker_pid: int | None
    retries: int
    kwargs: dict[str, Any]
    result: Any = None
    error: str | None
    traceback: str | None
    rerun_of: int | None = Field(None, description="the execution this run ran again")


class ExecutionDetail(ExecutionOut):
    """One run with its log so far: the live lines while it runs, the stored log after."""

    log: str | None
    log_lines: int
    reruns: list[int] = Field(
        default_factory=list, description="the executions that ran this one again, oldest first"
    )


class ExecutionPage(PageFields):
    """One page of runs, newest first."""

    items: list[ExecutionOut]


class ListExecutionsQuery(PageQuery):
    """Filters of ``GET /tasks/{id}/executions``."""

    status: ExecutionStatus | None = None


class AllExecutionsQuery(ListExecutionsQuery):
    """Filters of ``GET /executions``: every one given must match."""

    task_name: str | None = Field(None, min_length=1, max_length=255)
    scheduled_task_id: int | None = Field(None, ge=1, lt=2**63)
    trigger: ExecutionTrigger | None = None
    since: UTCDateTimeIn | None = Field(None, description="made at or after (created_at)")
    until: UTCDateTimeIn | None = Field(None, description="made before (created_at)")


class LogStreamQuery(BaseModel):
    """``last_event_id``: resume after this line (as the ``Last-Event-ID`` header does)."""

    model_config = ConfigDict(extra="ignore")

    last_event_id: int | None = Field(None, ge=-1, lt=2**62)


class LockOut(BaseModel):
    """A held lock; ``ttl_seconds`` is the time left (the ownership token is never shown)."""

    scope: str
    key: str
    scheduled_task_id: int | None
    celery_task_id: str
    execution_id: int | None
    hostname: str | None
    pid: int | None
    acquired_at: datetime
    ttl_seconds: float | None


class LockList(BaseModel):
    """Every held lock."""

    items: list[LockOut]
    total: int


class LockState(BaseModel):
    """The lock of one schedule, or ``locked: false``."""

    scheduled_task_id: int
    locked: bool
    lock: LockOut | None


class ReleaseResult(BaseModel):
    """What a force release released (``released: false`` when nothing was held)."""

    scheduled_task_id: int
    released: bool
    lock: LockOut | None
