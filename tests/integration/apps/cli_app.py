"""A host app for the CLI tests: two registered tasks, one with params."""

from __future__ import annotations

from typing import Any

from celery import Celery

from dataforge_scheduler import Settings, register_task, setup

app = Celery("cli_app")
runtime = setup(app, Settings.from_env())


@register_task(name="账号同步", description="刷新过期的登录会话", category="sync")
@app.task(name="dataforge.sync_accounts")
def sync_accounts(scheduled_task_id: int | None = None, **kwargs: Any) -> dict[str, int]:
    return {"synced_count": 0}


@register_task(
    name="清理日志",
    category="cleanup",
    params=[{"name": "days", "type": "int", "required": True, "label": "保留天数"}],
)
@app.task(name="dataforge.cleanup_logs")
def cleanup_logs(days: int, scheduled_task_id: int | None = None) -> int:
    return days
