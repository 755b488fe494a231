"""Clean-up tasks: ``dataforge.cleanup_expired``, with a required ``days`` param.

A schedule for it must give ``days`` (an int): the API refuses one without it, or with a
value that is not a whole number, with a 422 naming ``handler_kwargs.days``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dataforge_scheduler import DataForgeTask, register_task, task_log

from app.celery_app import celery_app

__all__ = ["cleanup_expired"]


@register_task(
    name="清理过期数据",
    description="删除过期的会话记录 (delete session records older than `days`)",
    category="cleanup",
    params=[
        {"name": "days", "type": "int", "required": True, "label": "Older than (days)"},
        {"name": "dry_run", "type": "bool", "default": False, "label": "Only count"},
    ],
)
@celery_app.task(base=DataForgeTask, name="dataforge.cleanup_expired", bind=True)
def cleanup_expired(
    self: DataForgeTask,
    /,
    *,
    days: int,
    dry_run: bool = False,
    scheduled_task_id: int | None = None,
    **_: Any,
) -> dict[str, Any]:
    cutoff = datetime.now(UTC) - timedelta(days=days)
    task_log(f"清理 {cutoff:%Y-%m-%d %H:%M} UTC 之前的记录 (days={days}, dry_run={dry_run})")
    expired = _find_expired(cutoff)
    self.extend_lock()
    if not dry_run:
        task_log(f"deleted {len(expired)} record(s)")
    return {"cutoff": cutoff.isoformat(), "expired": len(expired), "deleted": not dry_run}


def _find_expired(cutoff: datetime) -> list[int]:
    """The ids of the records older than ``cutoff`` (none: this example stores none)."""
    del cutoff
    return []
