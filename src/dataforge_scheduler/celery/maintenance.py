"""The maintenance tasks: the lost-run reaper and execution retention, and their schedules.

``reap_lost_executions`` (in ``celery.reaper``, re-exported here) ends as ``lost`` every
open run that can no longer end by itself: a ``running`` row whose worker died, a
``pending`` row whose message was lost or never sent, a ``retrying`` row whose retry
message was lost; the rules and their time bounds are in that module's docstring. The
run's log lines move from the log bus to ``log_output``. ``cleanup_executions`` deletes
finished history older than ``execution_retention_days`` in bounded batches. Both are
plain functions of a ``Runtime`` (testable without Celery), idempotent, and wrapped as the
Celery tasks ``dataforge.maintenance.*`` by ``register_maintenance_tasks`` (which
``setup()`` calls). ``ensure_maintenance_schedules`` creates their two system schedules
(the CLI's ``init-db`` calls it; ``setup()`` does no I/O).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from dataforge_scheduler.celery.reaper import (
    ReapReport,
    TaskTraits,
    TraitsLookup,
    celery_task_traits,
    reap_lost_executions,
)
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.core.enums import TaskType
from dataforge_scheduler.errors import ConfigurationError, ConflictError, ScheduleNotFound
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.store import maintenance as sql

__all__ = [
    "CLEANUP_TASK_NAME",
    "MAINTENANCE_SCHEDULES",
    "REAP_TASK_NAME",
    "ReapReport",
    "TaskTraits",
    "TraitsLookup",
    "celery_task_traits",
    "cleanup_audit",
    "cleanup_executions",
    "ensure_maintenance_schedules",
    "reap_lost_executions",
    "register_maintenance_tasks",
]

logger = logging.getLogger(__name__)

REAP_TASK_NAME = "dataforge.maintenance.reap_lost_executions"
CLEANUP_TASK_NAME = "dataforge.maintenance.cleanup_executions"

#: ``(schedule name, task name, interval seconds)`` of the system schedules.
MAINTENANCE_SCHEDULES: tuple[tuple[str, str, int], ...] = (
    (REAP_TASK_NAME, REAP_TASK_NAME, 60),
    (CLEANUP_TASK_NAME, CLEANUP_TASK_NAME, 3600),
)

_CATEGORY = "maintenance"
_DESCRIPTIONS = {
    REAP_TASK_NAME: (
        "Reap lost runs",
        "Marks open executions that can no longer end (worker died, message lost) as lost.",
    ),
    CLEANUP_TASK_NAME: (
        "Delete old history",
        "Deletes finished executions older than execution_retention_days, and audit "
        "entries older than audit_retention_days.",
    ),
}
_APP_MARKER = "_dataforge_maintenance_tasks"
_DEFAULT_MAX_BATCHES = 100


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, got {value!r}", field=name)
    return value


# ---------------------------------------------------------------- retention


def cleanup_executions(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    batch_size: int = 1000,
    max_batches: int = _DEFAULT_MAX_BATCHES,
) -> int:
    """Delete finished runs whose ``finished_at`` is older than ``execution_retention_days``.

    At most ``batch_size`` rows per transaction and ``max_batches`` transactions per
    call, so one call never holds locks for long; what is left goes on the next call.
    Never touches ``pending``, ``running`` or ``retrying`` rows. Returns rows deleted.
    """
    now = now if now is not None else runtime.clock.now()
    cutoff = now - timedelta(days=runtime.settings.execution_retention_days)
    deleted = _delete_in_batches(
        runtime, sql.delete_finished_before, cutoff, batch_size=batch_size, max_batches=max_batches
    )
    if deleted:
        logger.info("deleted %d execution(s) finished before %s", deleted, cutoff.isoformat())
    return deleted


def cleanup_audit(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    batch_size: int = 1000,
    max_batches: int = _DEFAULT_MAX_BATCHES,
) -> int:
    """Delete audit entries older than ``audit_retention_days``, in bounded batches as
    ``cleanup_executions`` does; returns entries deleted."""
    now = now if now is not None else runtime.clock.now()
    cutoff = now - timedelta(days=runtime.settings.audit_retention_days)
    deleted = _delete_in_batches(
        runtime, sql.delete_audit_before, cutoff, batch_size=batch_size, max_batches=max_batches
    )
    if deleted:
        logger.info("deleted %d audit entr(ies) recorded before %s", deleted, cutoff.isoformat())
    return deleted


def _delete_in_batches(
    runtime: Runtime,
    delete: Callable[..., int],
    cutoff: datetime,
    *,
    batch_size: int,
    max_batches: int,
) -> int:
    """``delete(session, cutoff=, limit=)`` one transaction per batch until a batch
    comes back short or ``max_batches`` ran; rows deleted."""
    batch_size = _positive("batch_size", batch_size)
    max_batches = _positive("max_batches", max_batches)
    deleted = 0
    for _ in range(max_batches):
        with runtime.session() as session:
            count = delete(session, cutoff=cutoff, limit=batch_size)
        deleted += count
        if count < batch_size:
            break
    return deleted


# ---------------------------------------------------------------- Celery tasks


def register_maintenance_tasks(app: Any, runtime: Runtime) -> None:
    """Register the maintenance tasks on ``app`` and describe them in ``runtime.registry``.

    Idempotent. The Celery tasks are created once per app, lazily (registering does not
    finalize the app) and not shared with other apps; they look the runtime up with
    ``runtime_for(app)`` when they run, so a later ``setup()`` is honoured.
    """
    if not getattr(app, _APP_MARKER, False):

        def reap(**_ignored: Any) -> dict[str, Any]:
            found = runtime_for(app)
            return reap_lost_executions(found, traits=celery_task_traits(app)).as_dict()

        def cleanup(**_ignored: Any) -> int:
            found = runtime_for(app)
            cleanup_audit(found)
            return cleanup_executions(found)

        # DataForgeTasks, so their runs have history like any scheduled run (the scheduler's
        # pending row moves on) and two reapers of one schedule never overlap
        app.task(name=REAP_TASK_NAME, shared=False, base=DataForgeTask)(reap)
        app.task(name=CLEANUP_TASK_NAME, shared=False, base=DataForgeTask)(cleanup)
        setattr(app, _APP_MARKER, True)
    _describe(runtime)


def _describe(runtime: Runtime) -> None:
    for task_name, (name, description) in _DESCRIPTIONS.items():
        # system tasks are exempt from the host's task_name_prefix rule
        runtime.registry.register(
            task_name,
            name=name,
            description=description,
            category=_CATEGORY,
            is_system=True,
        )


def ensure_maintenance_schedules(runtime: Runtime, *, now: datetime | None = None) -> list[str]:
    """Create the system schedules of the maintenance tasks that do not exist yet.

    By name, so calling it again (or from two processes at once) creates nothing twice
    and never overwrites a schedule an operator changed. Returns the names it created.
    """
    now = now if now is not None else runtime.clock.now()
    created: list[str] = []
    for name, task_name, seconds in MAINTENANCE_SCHEDULES:
        with runtime.session() as session:
            try:
                store.get_schedule_by_name(session, name)
                continue
            except ScheduleNotFound:
                pass
            fields = {
                "name": name,
                "description": _DESCRIPTIONS[task_name][1],
                "task_type": TaskType.INTERVAL,
                "task_name": task_name,
                "interval_seconds": seconds,
                "is_system": True,
            }
            try:
                store.create_schedule(
                    session, fields, now=now, default_timezone=runtime.settings.celery_timezone
                )
            except ConflictError:
                continue  # another process created it first
        created.append(name)
    return created
