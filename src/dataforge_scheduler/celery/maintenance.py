"""The maintenance tasks: the lost-run reaper and execution retention, and their schedules.

``reap_lost_executions`` ends as ``lost`` every ``running`` run that can no longer be
alive: one whose lock its Celery task id no longer holds (gone, expired, or taken by
another run), or, for a run that takes no lock (``overlap_policy="allow"``), one older
than its hard time limit plus ``lost_run_grace_seconds``. The run's log lines move from
the log bus to ``log_output``. ``cleanup_executions`` deletes finished history older than
``execution_retention_days`` in bounded batches. Both are plain functions of a
``Runtime`` (testable without Celery), idempotent, and wrapped as the Celery tasks
``dataforge.maintenance.*`` by ``register_maintenance_tasks`` (which ``setup()`` calls).
``ensure_maintenance_schedules`` creates their two system schedules (the CLI's
``init-db`` calls it; ``setup()`` does no I/O). ``pending`` rows are not the reaper's:
the scheduler that claimed a slot owns it until a worker starts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dataforge_scheduler.celery.logbuffer import capped_log_text
from dataforge_scheduler.core.enums import ExecutionStatus, OverlapPolicy, TaskType
from dataforge_scheduler.core.ports import schedule_scope, task_name_scope
from dataforge_scheduler.errors import (
    ConfigurationError,
    ConflictError,
    DataForgeError,
    ScheduleNotFound,
)
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.sql import maintenance as sql
from dataforge_scheduler.sql import store

__all__ = [
    "CLEANUP_TASK_NAME",
    "MAINTENANCE_SCHEDULES",
    "REAP_TASK_NAME",
    "ReapReport",
    "TaskTraits",
    "celery_task_traits",
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
        "Marks running executions whose worker died as lost and keeps their logs.",
    ),
    CLEANUP_TASK_NAME: (
        "Delete old history",
        "Deletes finished executions older than execution_retention_days.",
    ),
}
_APP_MARKER = "_dataforge_maintenance_tasks"
_DEFAULT_MAX_BATCHES = 100


@dataclass(frozen=True)
class TaskTraits:
    """What the reaper needs to know about a task: whether it takes a lock, its limit.

    ``overlap_policy`` None means the default (``skip``: the run holds a lock);
    ``time_limit`` None means ``settings.celery_task_default_timeout``.
    """

    overlap_policy: OverlapPolicy | None = None
    time_limit: float | None = None


TraitsLookup = Callable[[str], TaskTraits | None]


@dataclass
class ReapReport:
    """What one reaper pass saw: runs examined (past the grace), alive, and marked lost."""

    examined: int = 0
    alive: int = 0
    lost: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (the Celery task's result)."""
        return asdict(self)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, got {value!r}", field=name)
    return value


# ---------------------------------------------------------------- the reaper


def reap_lost_executions(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    batch_size: int = 500,
    traits: TraitsLookup | None = None,
) -> ReapReport:
    """Mark every ``running`` run that cannot be alive as ``lost``; safe to run anywhere,
    any number of times, concurrently.

    Candidates started more than ``lost_run_grace_seconds`` before ``now`` (a run that
    just started may not hold its lock yet). A run is alive while its lock is held by
    its Celery task id, under its scope or any other (its schedule may have been
    deleted since); a run with no lock is alive until its time limit plus the grace has
    passed. ``traits`` tells the reaper each task's own overlap policy and time limit
    (the Celery task passes ``celery_task_traits(app)``); without it, only the
    schedule's overlap policy is known. A lost run gets ``error`` "worker lost: ...",
    its log from the log bus (capped at ``log_max_bytes``), and its schedule's counters
    (a failure); its log then gets the usual retention TTL.
    """
    batch_size = _positive("batch_size", batch_size)
    now = now if now is not None else runtime.clock.now()
    grace = timedelta(seconds=runtime.settings.lost_run_grace_seconds)
    judge = _Judge(runtime, now=now, traits=traits)
    report = ReapReport()
    after: tuple[datetime, int] | None = None
    while True:
        with runtime.session() as session:
            batch = sql.select_running_before(
                session, cutoff=now - grace, after=after, limit=batch_size
            )
        for run in batch:
            report.examined += 1
            reason = judge.death(run)
            if reason is None:
                report.alive += 1
            elif _mark_lost(runtime, run, reason=reason, now=now):
                report.lost.append(run.id)
        if len(batch) < batch_size:
            break
        after = (batch[-1].started_at, batch[-1].id)
    if report.lost:
        logger.warning("reaper marked %d run(s) lost: %s", len(report.lost), report.lost)
    return report


class _Judge:
    """Decides, run by run, whether a ``running`` row can still be alive."""

    def __init__(self, runtime: Runtime, *, now: datetime, traits: TraitsLookup | None) -> None:
        self._runtime = runtime
        self._now = now
        self._traits = traits
        self._holders: set[str] | None = None

    def death(self, run: sql.RunningRun) -> str | None:
        """None while the run can be alive, else why it cannot (the row's error)."""
        traits = (self._traits(run.task_name) if self._traits else None) or TaskTraits()
        where = _where(run)
        if OverlapPolicy.ALLOW in (run.schedule_overlap_policy, traits.overlap_policy):
            settings = self._runtime.settings
            limit = traits.time_limit or settings.celery_task_default_timeout
            deadline = run.started_at + timedelta(seconds=limit + settings.lost_run_grace_seconds)
            if self._now < deadline:
                return None
            return (
                f"worker lost: the run takes no lock (overlap_policy allow) and started at "
                f"{run.started_at.isoformat()}, past its {limit:g} s time limit plus "
                f"{settings.lost_run_grace_seconds} s grace; it ran {where}"
            )
        scope = (
            schedule_scope(run.scheduled_task_id)
            if run.scheduled_task_id is not None
            else task_name_scope(run.task_name)
        )
        holder = self._runtime.locks.get(scope)
        if holder is not None and holder.celery_task_id == run.celery_task_id:
            return None
        if run.celery_task_id in self._lock_holders():
            return None
        state = "is gone (expired or released)"
        if holder is not None:
            state = f"is held by another run, task {holder.celery_task_id}"
        return f"worker lost: its lock {scope!r} {state}; it ran {where}"

    def _lock_holders(self) -> set[str]:
        # Only consulted for a run missing from its expected scope, once per pass: the
        # worker locks the scope of the schedule id it was sent, which the row no longer
        # names once that schedule is deleted.
        if self._holders is None:
            self._holders = {info.celery_task_id for info in self._runtime.locks.list()}
        return self._holders


def _where(run: sql.RunningRun) -> str:
    host = run.worker_hostname or "an unknown worker"
    return f"on {host} (pid {run.worker_pid})" if run.worker_pid is not None else f"on {host}"


def _mark_lost(runtime: Runtime, run: sql.RunningRun, *, reason: str, now: datetime) -> bool:
    """Finish ``run`` as ``lost`` if it is still that attempt; True when this call did."""
    settings = runtime.settings
    lines = [line.text for line in runtime.logbus.read(run.id)]
    log_output = capped_log_text(lines, max_bytes=settings.log_max_bytes)
    with runtime.session() as session:
        row = sql.lock_running_run(session, run)
        if row is None:
            return False
        finished = store.finish_execution(
            session,
            celery_task_id=run.celery_task_id,
            status=ExecutionStatus.LOST,
            now=now,
            error=reason,
            log_output=log_output if log_output is not None else row.log_output,
            result_max_bytes=settings.result_max_bytes,
        )
    if finished is None:
        return False
    logger.warning(
        "execution %d (%s, task %s) is lost: %s", run.id, run.task_name, run.celery_task_id, reason
    )
    try:
        runtime.logbus.finish(run.id, ExecutionStatus.LOST.value, ttl=settings.log_ttl_seconds)
    except DataForgeError:
        # the row is already right; only the Redis copy keeps no TTL
        logger.exception("could not end the log of lost execution %d", run.id)
    return True


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
    batch_size = _positive("batch_size", batch_size)
    max_batches = _positive("max_batches", max_batches)
    now = now if now is not None else runtime.clock.now()
    cutoff = now - timedelta(days=runtime.settings.execution_retention_days)
    deleted = 0
    for _ in range(max_batches):
        with runtime.session() as session:
            count = sql.delete_finished_before(session, cutoff=cutoff, limit=batch_size)
        deleted += count
        if count < batch_size:
            break
    if deleted:
        logger.info("deleted %d execution(s) finished before %s", deleted, cutoff.isoformat())
    return deleted


# ---------------------------------------------------------------- Celery tasks


def celery_task_traits(app: Any) -> TraitsLookup:
    """A ``traits`` lookup reading ``overlap_policy`` and ``time_limit`` off ``app``'s tasks."""

    def lookup(task_name: str) -> TaskTraits | None:
        task = app.tasks.get(task_name)
        if task is None:
            return None
        raw_policy = getattr(task, "overlap_policy", None)
        try:
            policy = OverlapPolicy(raw_policy) if raw_policy is not None else None
        except ValueError:
            policy = None
        limit = getattr(task, "time_limit", None) or app.conf.task_time_limit
        return TaskTraits(overlap_policy=policy, time_limit=float(limit) if limit else None)

    return lookup


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
            return cleanup_executions(runtime_for(app))

        app.task(name=REAP_TASK_NAME, shared=False)(reap)
        app.task(name=CLEANUP_TASK_NAME, shared=False)(cleanup)
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
