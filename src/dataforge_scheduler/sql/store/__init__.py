"""The store: every SQL statement the library runs, as functions over a ``Session``.

One module per subject: ``schedules`` (create, read, list, update, pause, resume,
delete), ``claims`` (what a beat pass runs), ``sweep`` (its unsent and queued slots),
``runs`` (a run starts, retries and
finishes), ``history`` (outbox records applied in batches), ``executions`` (reading runs
back, manual runs, sends), ``maintenance`` (the reaper's and retention's statements),
``audit`` (the API's trail) and ``admin`` (ping, schema check, test databases).
``fields`` holds the rules of a schedule's fields and ``common`` the transaction and its
error boundary. The only SQL outside this package
is the schema itself: the tables' DDL (``sql.models``: ``create_all``), the Alembic
revisions (``migrations``) and the SQLite connection pragmas (``sql.engine``).

Every call runs in ``transaction()`` (``Runtime.session()``), which commits or rolls
back and turns SQLAlchemy's errors into the library's (``BackendUnavailable``,
``ConflictError``, ``ConfigurationError``, ``DatabaseError``), so callers catch only
``DataForgeError``. No function commits: the caller owns the transaction. The names
below are the store's surface; ``from dataforge_scheduler.sql import store`` and
``store.create_schedule(...)``.
"""

from __future__ import annotations

from dataforge_scheduler.sql.store.admin import (
    database_label,
    isolated_database,
    missing_tables,
    ping,
    truncate_tables,
)
from dataforge_scheduler.sql.store.audit import list_audit, record_audit, schedule_snapshot
from dataforge_scheduler.sql.store.common import (
    ClaimFilter,
    Engine,
    Session,
    SessionFactory,
    database_error,
    transaction,
)
from dataforge_scheduler.sql.store.executions import (
    cancel_execution,
    create_manual_run,
    get_execution,
    get_execution_by_celery_id,
    list_executions,
    mark_sent,
    rerun_ids,
    skip_next_slot,
    unskip_slot,
)
from dataforge_scheduler.sql.store.fields import SCHEDULE_FIELDS, TRIGGER_FIELDS
from dataforge_scheduler.sql.store.history import HistoryApplied, apply_history
from dataforge_scheduler.sql.store.notices import DatabaseChangeListener, listen_for_changes
from dataforge_scheduler.sql.store.paging import MAX_CURSOR_LENGTH, MAX_PAGE_SIZE, Page
from dataforge_scheduler.sql.store.runs import (
    DEFAULT_RESULT_MAX_BYTES,
    RunFinished,
    RunStarted,
    finish_run,
    start_run,
)
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
    "MAX_CURSOR_LENGTH",
    "MAX_PAGE_SIZE",
    "SCHEDULE_FIELDS",
    "TRIGGER_FIELDS",
    "ClaimFilter",
    "DatabaseChangeListener",
    "Engine",
    "HistoryApplied",
    "Page",
    "RunFinished",
    "RunStarted",
    "Session",
    "SessionFactory",
    "apply_history",
    "cancel_execution",
    "compute_next_run",
    "create_manual_run",
    "create_schedule",
    "database_error",
    "database_label",
    "delete_schedule",
    "finish_run",
    "get_execution",
    "get_execution_by_celery_id",
    "get_schedule",
    "get_schedule_by_name",
    "isolated_database",
    "list_audit",
    "list_executions",
    "list_schedules",
    "listen_for_changes",
    "mark_sent",
    "missing_tables",
    "pause_schedule",
    "ping",
    "record_audit",
    "rerun_ids",
    "resume_schedule",
    "schedule_snapshot",
    "skip_next_slot",
    "start_run",
    "transaction",
    "truncate_tables",
    "unskip_slot",
    "update_schedule",
]
