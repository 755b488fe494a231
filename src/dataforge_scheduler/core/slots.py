"""The values a scheduler pass works with: slots to claim, rows to advance, runs to send.

A pass reads due schedule rows, plans them (``core.timing.plan_row`` gives a ``RowPlan``:
the ``NewSlot`` execution rows to insert and the ``Advance`` to write back), inserts the
slots, and sends every slot it inserted as a ``ClaimedSlot``. A manual run ("run now") is
a ``ClaimedSlot`` too, with trigger ``manual`` and no slot time, so both are published by
the same code (``core.messages``). All plain frozen values: safe to keep after the
transaction that produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger, TaskStatus

__all__ = [
    "Advance",
    "ClaimedSlot",
    "NewSlot",
    "PassResult",
    "PlannableRow",
    "RowPlan",
    "within_max_runs",
]

#: The slot statuses that run (now or once the run before ends): what ``max_runs`` counts.
_RUNS = frozenset({ExecutionStatus.PENDING, ExecutionStatus.QUEUED})


class PlannableRow(Protocol):
    """The schedule attributes a pass plans with; ``ScheduledTask`` has them."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def task_name(self) -> str: ...
    @property
    def task_type(self) -> str: ...
    @property
    def handler_kwargs(self) -> Any: ...
    @property
    def next_run_at(self) -> datetime | None: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def misfire_policy(self) -> str: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def expire_seconds(self) -> int | None: ...
    @property
    def overlap_policy(self) -> str: ...
    @property
    def max_runs(self) -> int | None: ...


@dataclass(frozen=True)
class NewSlot:
    """An execution row to insert for a slot: ``pending`` to send it, ``queued`` to send it
    later (the sweep sends it once the run before it has ended), ``failed`` with
    ``error`` when it cannot be sent (its task is not registered), or ``missed`` with
    the reason."""

    scheduled_task_id: int
    scheduled_for: datetime
    task_name: str
    celery_task_id: str
    kwargs: dict[str, Any]
    status: ExecutionStatus = ExecutionStatus.PENDING
    error: str | None = None


@dataclass(frozen=True)
class Advance:
    """What a pass writes back to one schedule row.

    ``last_status``/``last_execution_id``/``last_error`` of ``None`` leave the stored
    values alone.
    """

    schedule_id: int
    next_run_at: datetime | None
    status: TaskStatus = TaskStatus.ACTIVE
    last_status: ExecutionStatus | None = None
    last_execution_id: int | None = None
    last_error: str | None = None
    runs_taken: int = 0  # slots claimed to run: what max_runs loses


@dataclass(frozen=True)
class ClaimedSlot:
    """A run whose ``pending`` row exists: everything needed to send it.

    ``kwargs`` are the task's keyword arguments as stored on the execution row
    (``handler_kwargs`` plus ``scheduled_task_id``). ``scheduled_for`` is the slot (None
    for a manual run); ``claimed_at`` when the row was made, from which a manual run's
    ``expire_seconds`` count (a slot's count from the slot). ``overlap_policy`` is the
    schedule's (the worker learns it from the message). ``resend`` is True when the slot
    was found unsent by the sweep rather than claimed by this pass.
    """

    execution_id: int
    celery_task_id: str
    scheduled_task_id: int | None
    schedule_name: str | None
    task_name: str
    scheduled_for: datetime | None
    kwargs: dict[str, Any]
    queue: str | None = None
    priority: int | None = None
    expire_seconds: int | None = None
    overlap_policy: str | None = None
    trigger: ExecutionTrigger = ExecutionTrigger.SCHEDULE
    claimed_at: datetime | None = None
    resend: bool = False


@dataclass(frozen=True)
class RowPlan:
    """What a pass does with one due row: the execution rows to insert, what to write
    back (``advance``), and the runs of the schedule to cancel (Celery task ids, under
    overlap policy ``cancel_other``) with the reason their rows record."""

    row: PlannableRow
    slots: list[NewSlot]
    next_run_at: datetime | None
    status: TaskStatus
    cancel: tuple[str, ...] = ()
    cancel_reason: str | None = None
    # max_runs: the run slots the plan counted on to use up the last runs (0: no limit
    # reached), and where the schedule goes on if some of them were claimed by others
    limited_runs: int = 0
    unlimited_next: datetime | None = None

    def advance(self, inserted: Mapping[str, int]) -> Advance:
        """The row's write-back; a slot recorded as failed (unregistered task, kwargs
        that fail the params) becomes the row's ``last_status``, ``last_execution_id``
        and ``last_error``."""
        failed = [
            (inserted[slot.celery_task_id], slot.error)
            for slot in self.slots
            if slot.status is ExecutionStatus.FAILED and slot.celery_task_id in inserted
        ]
        last = max(failed, key=lambda pair: pair[0]) if failed else None
        taken = sum(
            1 for slot in self.slots if slot.status in _RUNS and slot.celery_task_id in inserted
        )
        next_run_at, status = self.next_run_at, self.status
        if self.limited_runs and taken < self.limited_runs:
            # a slot it counted on had a row already (a run early took it): runs are
            # left, so the schedule goes on after the planned slots
            next_run_at = self.unlimited_next
            status = TaskStatus.ACTIVE if next_run_at is not None else TaskStatus.COMPLETED
        return Advance(
            schedule_id=self.row.id,
            next_run_at=next_run_at,
            status=status,
            last_status=ExecutionStatus.FAILED if last else None,
            last_execution_id=last[0] if last else None,
            last_error=last[1] if last else None,
            runs_taken=taken,
        )


@dataclass(frozen=True)
class PassResult:
    """What one claim-and-send pass did.

    ``sent``: slots published (claimed by this pass, or found unsent and re-sent);
    ``unsent``: slots claimed but refused by the broker, left for a later pass;
    ``next_run_at``: the earliest ``next_run_at`` after the pass; ``batch_full``: the
    pass claimed a full batch of schedules, so more may already be due;
    ``next_sweep_at``: when slots left unsent (stranded, refused or held) are next
    looked at, or None.
    """

    sent: tuple[ClaimedSlot, ...] = ()
    unsent: tuple[ClaimedSlot, ...] = ()
    claimed_schedules: int = 0
    next_run_at: datetime | None = None
    batch_full: bool = False
    next_sweep_at: datetime | None = None


def within_max_runs(slots: list[NewSlot], remaining: int | None) -> tuple[list[NewSlot], bool]:
    """The slots a schedule with ``remaining`` runs left may claim, and whether they
    use up the last (the schedule then completes). Slots that do not run (missed,
    skipped, failed) cost nothing; those after the last run are dropped."""
    if remaining is None:
        return slots, False
    runs = [slot for slot in slots if slot.status in _RUNS]
    if len(runs) < remaining:
        return slots, False
    if remaining <= 0:
        return [], True
    last = runs[remaining - 1].scheduled_for
    return [slot for slot in slots if slot.scheduled_for <= last], True
