"""Schedules over HTTP: what a client sends to create or change one, and what it reads.

Field rules mirror the ``scheduled_tasks`` columns (lengths, ranges); the rules that span
fields (a cron schedule needs ``cron_expression``, a date schedule a future ``run_at``)
and the registry checks (``task_name`` registered, ``handler_kwargs`` fitting its params)
run in the handlers and the store, which answer 422 naming the field. ``is_system`` is
read-only: system schedules are made by the library, never through the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataforge_scheduler.api.schemas.common import PageFields, PageQuery, UTCDateTimeIn
from dataforge_scheduler.api.schemas.runs import ExecutionOut, LockOut
from dataforge_scheduler.core.enums import (
    ExecutionStatus,
    MisfirePolicy,
    OverlapPolicy,
    TaskStatus,
    TaskType,
)

__all__ = [
    "ExclusionWindow",
    "ListTasksQuery",
    "PauseRequest",
    "RegisteredTaskInfo",
    "TaskCreate",
    "TaskDetail",
    "TaskOut",
    "TaskPage",
    "TaskUpdate",
    "plain_windows",
]

_INT32 = 2**31
SortKey = Literal[
    "id",
    "-id",
    "name",
    "-name",
    "next_run_at",
    "-next_run_at",
    "last_run_at",
    "-last_run_at",
    "created_at",
    "-created_at",
]
Settable = Literal["active", "paused"]
_MAX_RUNS = (
    "scheduled runs left: each slot claimed to run takes one, and the schedule completes "
    "when none is left (null: no limit)"
)
_PAUSE_AFTER_FAILURES = (
    "pause the schedule after this many failed or lost runs in a row (null: never)"
)


class ExclusionWindow(BaseModel):
    """A window in which the schedule's slots are not sent: ``start`` and ``end`` (wall
    times in the schedule's zone, or with an offset; ``end`` not included), or ``dates``
    (whole days in the zone), or ``cron`` and ``duration_seconds`` (opening at each fire
    of the expression, in the zone, for that long). ``name`` is what the preview shows."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=64, examples=["weekends"])
    start: str | None = Field(None, max_length=64, examples=["2026-12-24T00:00"])
    end: str | None = Field(None, max_length=64, examples=["2026-12-27T00:00"])
    dates: list[str] | None = Field(None, max_length=366, examples=[["2026-10-01"]])
    cron: str | None = Field(None, max_length=255, examples=["0 0 * * 6"])
    duration_seconds: int | None = Field(None, strict=True, ge=1, examples=[172800])


def plain_windows(windows: list[ExclusionWindow] | None) -> list[dict[str, Any]] | None:
    """The windows as the store keeps them: only the keys given."""
    if windows is None:
        return None
    return [window.model_dump(exclude_none=True) for window in windows]


class TaskCreate(BaseModel):
    """A new schedule. Which trigger field is needed depends on ``task_type``: ``cron``
    needs ``cron_expression``, ``interval`` needs ``interval_seconds``, ``date`` needs a
    future ``run_at``, ``manual`` needs none (it runs only through "run now")."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    task_type: TaskType
    task_name: str = Field(min_length=1, max_length=255)
    cron_expression: str | None = Field(None, max_length=255, examples=["0 * * * *"])
    interval_seconds: int | None = Field(None, strict=True, gt=0, lt=_INT32)
    run_at: UTCDateTimeIn | None = None
    timezone: str | None = Field(None, max_length=64, examples=["Asia/Shanghai"])
    handler_kwargs: dict[str, Any] = Field(default_factory=dict)
    status: Settable = "active"
    queue: str | None = Field(None, max_length=200)
    priority: int | None = Field(None, strict=True, ge=0, le=255)
    expire_seconds: int | None = Field(None, strict=True, ge=1, lt=_INT32)
    start_at: UTCDateTimeIn | None = None
    end_at: UTCDateTimeIn | None = None
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_seconds: int | None = Field(None, strict=True, ge=0, lt=_INT32)
    overlap_policy: OverlapPolicy | None = Field(
        None,
        description="What a slot does while another run of the schedule is going; "
        "omitted: the task's registered default, else skip",
    )
    pause_after_failures: int | None = Field(
        None, strict=True, ge=1, lt=_INT32, description=_PAUSE_AFTER_FAILURES
    )
    max_runs: int | None = Field(None, strict=True, ge=1, lt=_INT32, description=_MAX_RUNS)
    exclusions: list[ExclusionWindow] | None = Field(
        None, max_length=50, description="windows in which slots are not sent"
    )


class TaskUpdate(BaseModel):
    """A change: only the fields given are changed (PUT and PATCH alike). ``null`` clears
    an optional field; for a required one it is a 422. A change to when the schedule
    fires recomputes ``next_run_at`` from now."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    task_type: TaskType | None = None
    task_name: str | None = Field(None, min_length=1, max_length=255)
    cron_expression: str | None = Field(None, max_length=255)
    interval_seconds: int | None = Field(None, strict=True, gt=0, lt=_INT32)
    run_at: UTCDateTimeIn | None = None
    timezone: str | None = Field(None, max_length=64)
    handler_kwargs: dict[str, Any] | None = None
    status: Settable | None = None
    queue: str | None = Field(None, max_length=200)
    priority: int | None = Field(None, strict=True, ge=0, le=255)
    expire_seconds: int | None = Field(None, strict=True, ge=1, lt=_INT32)
    start_at: UTCDateTimeIn | None = None
    end_at: UTCDateTimeIn | None = None
    misfire_policy: MisfirePolicy | None = None
    misfire_grace_seconds: int | None = Field(None, strict=True, ge=0, lt=_INT32)
    overlap_policy: OverlapPolicy | None = None
    pause_after_failures: int | None = Field(
        None, strict=True, ge=1, lt=_INT32, description=_PAUSE_AFTER_FAILURES
    )
    max_runs: int | None = Field(None, strict=True, ge=1, lt=_INT32, description=_MAX_RUNS)
    exclusions: list[ExclusionWindow] | None = Field(
        None, max_length=50, description="windows in which slots are not sent"
    )
    expected_version: int | None = Field(
        None,
        strict=True,
        ge=1,
        lt=_INT32,
        description="refuse the change (409) unless the row is at it",
    )


class PauseRequest(BaseModel):
    """Optional body of ``POST /tasks/{id}/pause``."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(
        None, min_length=1, max_length=500, description="why, shown with the status"
    )


class TaskOut(BaseModel):
    """A schedule as stored, with its run counters."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    task_type: TaskType
    task_name: str
    cron_expression: str | None
    interval_seconds: int | None
    run_at: datetime | None
    timezone: str | None
    handler_kwargs: dict[str, Any]
    status: TaskStatus
    is_system: bool
    queue: str | None
    priority: int | None
    expire_seconds: int | None
    start_at: datetime | None
    end_at: datetime | None
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int | None
    overlap_policy: OverlapPolicy
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: ExecutionStatus | None
    last_execution_id: int | None
    last_error: str | None = Field(
        default=None, description="The last run's error when it failed or was lost"
    )
    run_count: int
    success_count: int
    failure_count: int
    total_runtime_ms: int
    created_at: datetime
    updated_at: datetime
    version: int
    pause_note: str | None = Field(
        None, description="why it is paused: the pause's note, or why it paused itself"
    )
    pause_after_failures: int | None = None
    max_runs: int | None = Field(None, description=_MAX_RUNS)
    exclusions: list[dict[str, Any]] | None = Field(
        None, description="windows in which slots are not sent"
    )
    failure_streak: int = Field(0, description="failed or lost runs since the last success")


class RegisteredTaskInfo(BaseModel):
    """A registered task in full: names, category, system flag and param specs."""

    task_name: str
    name: str
    description: str
    category: str
    is_system: bool
    overlap_policy: OverlapPolicy | None = Field(
        None, description="the overlap policy of schedules created without one (null: skip)"
    )
    params: list[dict[str, Any]]


class TaskDetail(TaskOut):
    """One schedule with its lock state, last run and registry entry."""

    locked: bool
    lock: LockOut | None
    last_execution: ExecutionOut | None
    registered: RegisteredTaskInfo | None = Field(
        description="the registry's entry for task_name; null when it is not registered"
    )


class TaskPage(PageFields):
    """One page of schedules."""

    items: list[TaskOut]


class ListTasksQuery(PageQuery):
    """Filters of ``GET /tasks``; ``search`` matches name or task name."""

    status: TaskStatus | None = None
    task_type: TaskType | None = None
    category: str | None = Field(None, max_length=200)
    search: str | None = Field(
        None, max_length=200, description="A substring of the name or task name, any case."
    )
    sort: SortKey = "id"
