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
    SKIPPED = "skipped"  # another run of the schedule was going (its error says how)
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
    BACKFILL = "backfill"  # a past slot a backfill asked for, run in slot order


class MisfirePolicy(StrEnum):
    """What a scheduler does with slots it finds late after downtime."""

    RUN_ONCE = "run_once"
    SKIP = "skip"
    CATCH_UP = "catch_up"


class OverlapPolicy(StrEnum):
    """What a slot does when another run of its schedule is still going.

    ``skip``: the slot is sent and its run takes the schedule's lock, or is recorded
    ``skipped`` while another run holds it. ``allow``: no lock; runs may overlap.
    ``buffer_one``: the slot waits (``queued``) until the run ends, then runs; at most
    one waits, a further one is recorded ``skipped`` ("buffer full"). ``cancel_other``:
    the run still going is revoked and terminated (recorded ``revoked`` with the
    reason) and the slot runs once it has ended.
    """

    SKIP = "skip"
    ALLOW = "allow"
    BUFFER_ONE = "buffer_one"
    CANCEL_OTHER = "cancel_other"


class AuditAction(StrEnum):
    """The state-changing calls the audit trail records."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RUN = "run"
    PAUSE = "pause"
    RESUME = "resume"
    RELEASE_LOCK = "release_lock"
    CANCEL = "cancel"
    RERUN = "rerun"
    BACKFILL = "backfill"
