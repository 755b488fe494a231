"""The closed vocabularies stored in the database, as ``str`` enums.

Values are the exact strings in the ``scheduled_tasks`` and ``task_executions``
columns, so raw SQL (the seed's INSERT) and the models agree.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AuditAction",
    "ExecutionStatus",
    "ExecutionTrigger",
    "MisfirePolicy",
    "OverlapPolicy",
    "TaskStatus",
    "TaskType",
]


class TaskType(StrEnum):
    """How a schedule fires."""

    CRON = "cron"
    INTERVAL = "interval"
    DATE = "date"
    MANUAL = "manual"


class TaskStatus(StrEnum):
    """The state of a schedule row."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"  # a one-shot `date` schedule that has fired
    DISABLED = "disabled"  # switched off by an operator (or its task is gone)


class ExecutionStatus(StrEnum):
    """The state of one run."""

    PENDING = "pending"  # slot claimed by a scheduler, not yet started by a worker
    QUEUED = "queued"  # claimed, waiting unsent for the run before it (a catch_up backlog)
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    RETRYING = "retrying"
    SKIPPED = "skipped"  # the schedule's lock was held by another run
    MISSED = "missed"  # not sent, by the misfire policy (its error says which rule)
    LOST = "lost"  # the worker died mid-run
    REVOKED = "revoked"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset(
    {
        ExecutionStatus.SUCCESS,
        ExecutionStatus.FAILED,
        ExecutionStatus.SKIPPED,
        ExecutionStatus.MISSED,
        ExecutionStatus.LOST,
        ExecutionStatus.REVOKED,
    }
)


class ExecutionTrigger(StrEnum):
    """What started a run."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    EXTERNAL = "external"  # a plain .delay()/send_task() that bypassed scheduler and API


class MisfirePolicy(StrEnum):
    """What a scheduler does with slots it finds late after downtime."""

    RUN_ONCE = "run_once"
    SKIP = "skip"
    CATCH_UP = "catch_up"


class OverlapPolicy(StrEnum):
    """Whether a run may start while another run of the same schedule holds the lock."""

    SKIP = "skip"
    ALLOW = "allow"


class AuditAction(StrEnum):
    """The state-changing calls the audit trail records."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RUN = "run"
    PAUSE = "pause"
    RESUME = "resume"
    RELEASE_LOCK = "release_lock"
