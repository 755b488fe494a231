"""dataforge-scheduler: database-driven scheduling for Celery.

Public names only; see DESIGN.md for what each one is. Everything else is importable from
its module but is not part of the stable surface.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from dataforge_scheduler.celery.beat import DatabaseScheduler
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.core.context import current_run
from dataforge_scheduler.core.enums import (
    ExecutionStatus,
    ExecutionTrigger,
    MisfirePolicy,
    OverlapPolicy,
    TaskStatus,
    TaskType,
)
from dataforge_scheduler.errors import (
    ConfigurationError,
    DataForgeError,
    InvalidParams,
    InvalidSchedule,
    LockLost,
    LockNotAcquired,
    NotFound,
    UnknownTask,
)
from dataforge_scheduler.registry import (
    REGISTERED_TASKS,
    ParamSpec,
    TaskInfo,
    TaskRegistry,
    register_task,
    registry,
)
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution, create_all, metadata
from dataforge_scheduler.wiring import setup

try:
    __version__ = version("dataforge-scheduler")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "REGISTERED_TASKS",
    "ConfigurationError",
    "DataForgeError",
    "DataForgeTask",
    "DatabaseScheduler",
    "ExecutionStatus",
    "ExecutionTrigger",
    "InvalidParams",
    "InvalidSchedule",
    "LockLost",
    "LockNotAcquired",
    "MisfirePolicy",
    "NotFound",
    "OverlapPolicy",
    "ParamSpec",
    "Runtime",
    "ScheduledTask",
    "Settings",
    "TaskExecution",
    "TaskInfo",
    "TaskRegistry",
    "TaskStatus",
    "TaskType",
    "UnknownTask",
    "create_all",
    "current_run",
    "metadata",
    "register_task",
    "registry",
    "runtime_for",
    "setup",
    "task_log",
]
