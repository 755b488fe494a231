"""The demo's two example tasks and their schedules.

``register_demo_tasks(app, registry)`` defines ``demo.heartbeat`` and ``demo.report`` on
the demo's Celery app as ``DataForgeTask`` tasks, described in ``registry`` the way a
host describes its own (``register_task``), at call time, never at import.
``ensure_demo_schedules(runtime)`` creates their schedules by name if missing: the
heartbeat on a 5-second interval (anchored so its first run comes about a second after
start), the report on the ``* * * * *`` cron. Both bodies write several ``task_log``
lines and call ``extend_lock()`` once, as a long task would.
"""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta
from typing import Any

from celery import Celery

from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.core.enums import ExecutionStatus, TaskType
from dataforge_scheduler.errors import ConflictError, ScheduleNotFound
from dataforge_scheduler.registry import TaskRegistry, register_task
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.sql import store

__all__ = [
    "HEARTBEAT_SECONDS",
    "HEARTBEAT_TASK",
    "REPORT_CRON",
    "REPORT_TASK",
    "ensure_demo_schedules",
    "register_demo_tasks",
]

HEARTBEAT_TASK = "demo.heartbeat"
REPORT_TASK = "demo.report"
HEARTBEAT_SECONDS = 5
REPORT_CRON = "* * * * *"
#: Simulated work per heartbeat, so a run has a visible duration and log over time.
WORK_SECONDS = 0.2
#: The first heartbeat comes this long after its schedule is created.
FIRST_HEARTBEAT_AFTER = timedelta(seconds=1)


def register_demo_tasks(app: Celery, registry: TaskRegistry) -> None:
    """Define the demo tasks on ``app`` and describe them in ``registry`` (idempotent)."""
    if HEARTBEAT_TASK in app.tasks and HEARTBEAT_TASK in registry:
        return

    @register_task(
        name="Heartbeat",
        description="Says hello every few seconds: a short task with a log and a lock.",
        category="demo",
        params=[
            {"name": "greeting", "type": "str", "label": "Greeting", "default": "hello"},
        ],
        registry=registry,
    )
    @app.task(base=DataForgeTask, name=HEARTBEAT_TASK, bind=True, max_retries=0)
    def heartbeat(
        self: DataForgeTask,
        /,
        scheduled_task_id: int | None = None,
        greeting: str = "hello",
        **_: Any,
    ) -> dict[str, Any]:
        host = socket.gethostname()
        task_log(f"{greeting} from {host} (schedule {scheduled_task_id})")
        time.sleep(WORK_SECONDS)
        task_log("halfway: extending the lock, as a long task would")
        self.extend_lock()
        time.sleep(WORK_SECONDS)
        task_log("done")
        return {"greeting": greeting, "host": host}

    @register_task(
        name="History report",
        description="Every minute, counts the runs in the history by outcome.",
        category="demo",
        registry=registry,
    )
    @app.task(base=DataForgeTask, name=REPORT_TASK, bind=True, max_retries=0)
    def report(
        self: DataForgeTask, /, scheduled_task_id: int | None = None, **_: Any
    ) -> dict[str, int]:
        runtime = runtime_for(self.app)
        task_log("counting the runs in task_executions...")
        counts = _count_runs(runtime)
        self.extend_lock()
        for status, count in counts.items():
            task_log(f"{status:>8}: {count}")
        task_log(f"{sum(counts.values())} finished run(s) in the history")
        return counts


def _count_runs(runtime: Runtime) -> dict[str, int]:
    wanted = (ExecutionStatus.SUCCESS, ExecutionStatus.FAILED, ExecutionStatus.SKIPPED)
    with runtime.session() as session:
        return {
            status.value: int(
                store.list_executions(session, status=status.value, page_size=1, count=True).total
                or 0
            )
            for status in wanted
        }


def ensure_demo_schedules(runtime: Runtime, *, now: datetime | None = None) -> list[str]:
    """Create the demo schedules that do not exist yet (by name); returns the created."""
    now = now if now is not None else runtime.clock.now()
    # an interval grid first fires one interval after its anchor: start the grid so the
    # first heartbeat comes a second from now, not five
    anchor = now + FIRST_HEARTBEAT_AFTER - timedelta(seconds=HEARTBEAT_SECONDS)
    wanted: list[dict[str, Any]] = [
        {
            "name": HEARTBEAT_TASK,
            "description": f"demo: a heartbeat every {HEARTBEAT_SECONDS} s",
            "task_type": TaskType.INTERVAL,
            "task_name": HEARTBEAT_TASK,
            "interval_seconds": HEARTBEAT_SECONDS,
            "start_at": anchor,
            "handler_kwargs": {"greeting": "hello"},
        },
        {
            "name": REPORT_TASK,
            "description": "demo: a history report at the start of every minute",
            "task_type": TaskType.CRON,
            "task_name": REPORT_TASK,
            "cron_expression": REPORT_CRON,
        },
    ]
    created: list[str] = []
    for fields in wanted:
        with runtime.session() as session:
            try:
                store.get_schedule_by_name(session, fields["name"])
                continue
            except ScheduleNotFound:
                pass
            try:
                store.create_schedule(
                    session, fields, now=now, default_timezone=runtime.settings.celery_timezone
                )
            except ConflictError:
                continue  # another process created it first
        created.append(fields["name"])
    return created
