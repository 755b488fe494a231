"""Every SQL statement the library runs, as functions over a SQLAlchemy ``Session``.

Schedules (``schedules``), executions (``executions``) and the field rules of a schedule
(``fields``) live in their own modules; this one gathers their public names so callers
write ``from dataforge_scheduler.sql import store`` and ``store.create_schedule(...)``.
No function commits: the caller owns the transaction (``with session.begin(): ...``).
"""

from __future__ import annotations

from dataforge_scheduler.sql.store.common import MAX_PAGE_SIZE, Page
from dataforge_scheduler.sql.store.executions import (
    DEFAULT_RESULT_MAX_BYTES,
    RunStart,
    begin_execution,
    finish_execution,
    get_execution,
    get_execution_by_celery_id,
    list_executions,
    start_execution,
)
from dataforge_scheduler.sql.store.fields import SCHEDULE_FIELDS, TRIGGER_FIELDS
from dataforge_scheduler.sql.store.schedules import (
    compute_next_run,
    create_schedule,
    delete_schedule,
    get_schedule,
    get_schedule_by_name,
    list_schedules,
    pause_schedule,
    resume_schedule,
    update_schedule,
)

__all__ = [
    "DEFAULT_RESULT_MAX_BYTES",
    "MAX_PAGE_SIZE",
    "SCHEDULE_FIELDS",
    "TRIGGER_FIELDS",
    "Page",
    "RunStart",
    "begin_execution",
    "compute_next_run",
    "create_schedule",
    "delete_schedule",
    "finish_execution",
    "get_execution",
    "get_execution_by_celery_id",
    "get_schedule",
    "get_schedule_by_name",
    "list_executions",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "start_execution",
    "update_schedule",
]
