"""What the handlers share: rows to response models, pages, and the registry check of
a task name and its kwargs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataforge_scheduler.api.schemas.runs import ExecutionOut, LockOut
from dataforge_scheduler.api.schemas.tasks import TaskOut
from dataforge_scheduler.core.values import LockInfo
from dataforge_scheduler.redis.keys import schedule_id_of_scope
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution
from dataforge_scheduler.sql.store import Page

__all__ = ["execution_out", "lock_out", "page_of", "stored_kwargs", "task_out"]


def task_out(row: ScheduledTask) -> TaskOut:
    return TaskOut.model_validate(row, from_attributes=True)


def execution_out(row: TaskExecution) -> ExecutionOut:
    return ExecutionOut.model_validate(row, from_attributes=True)


def lock_out(info: LockInfo) -> LockOut:
    """A held lock without its token; ``scheduled_task_id`` read from a ``task:<id>`` scope."""
    return LockOut(
        scope=info.scope,
        key=info.key,
        scheduled_task_id=schedule_id_of_scope(info.scope),
        celery_task_id=info.celery_task_id,
        execution_id=info.execution_id,
        hostname=info.hostname,
        pid=info.pid,
        acquired_at=info.acquired_at,
        ttl_seconds=info.ttl_seconds,
    )


def page_of(page: Page[Any], items: list[Any]) -> dict[str, Any]:
    """The fields of a page response, with ``items`` already converted."""
    return {
        "items": items,
        "total": page.total,
        "page": page.page,
        "page_size": page.page_size,
        "next_cursor": page.next_cursor,
    }


def stored_kwargs(
    registry: TaskRegistry, task_name: str, kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """``kwargs`` as a schedule stores them: checked against every param (required ones
    included) and coerced, without filling defaults in (a default changed in code later
    still applies). Raises ``UnknownTask`` or ``InvalidParams``."""
    registry.validate_kwargs(task_name, kwargs)
    return registry.validate_kwargs(task_name, kwargs, partial=True)
