"""Synchronisation tasks: ``dataforge.sync_accounts``.

``@register_task`` (on top) describes the task for the API and front ends (display name,
category, params, validated on every schedule created through the API);
``@celery_app.task(base=DataForgeTask, ...)`` makes it a Celery task that takes the
schedule's lock before its body runs and leaves a run-history row with its log.
"""

from __future__ import annotations

from typing import Any

from dataforge_scheduler import DataForgeTask, register_task, task_log

from app.celery_app import celery_app
from app.config import settings_for

__all__ = ["sync_accounts"]


@register_task(
    name="账号同步",
    description="刷新过期的登录会话 (refresh expired login sessions), in batches",
    category="sync",
    params=[
        {
            "name": "count",
            "type": "int",
            "label": "Accounts",
            "default": 10,
            "description": "How many accounts to refresh",
        },
    ],
)
@celery_app.task(base=DataForgeTask, name="dataforge.sync_accounts", bind=True)
def sync_accounts(
    self: DataForgeTask,
    /,
    scheduled_task_id: int | None = None,
    count: int = 10,
    **_: Any,
) -> dict[str, int]:
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    batch_size = settings_for(self.app).sync_batch_size
    task_log("开始同步账号...", count)
    synced = batches = 0
    while synced < count:
        synced += min(batch_size, count - synced)  # the real work: refresh one batch
        batches += 1
        task_log(f"batch {batches}: {synced}/{count} synced")
        self.extend_lock()  # a long run keeps its lock while it makes progress
    task_log("同步完成")
    return {"synced_count": synced, "batches": batches}
