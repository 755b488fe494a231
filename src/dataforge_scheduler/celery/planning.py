"""Planning one schedule row in a pass: its first ``next_run_at``, and its slots (the
trigger, the misfire and overlap rules of ``core.timing.plan_row``, the task's
registration and params), with one row's failure kept from the others of its batch.

``RowPlanner`` reads the scheduler's hooks (``trigger_for_row``, ``is_registered``,
``takes_lock``) and tuning (``max_slots_per_schedule``, ``retry_failed_row_seconds``), so
a subclass of ``DatabaseScheduler`` changes planning the same way as before.
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.core.backlog import InFlight
from dataforge_scheduler.core.enums import TaskStatus
from dataforge_scheduler.core.slots import Advance, RowPlan
from dataforge_scheduler.core.timing import first_run_advance, misfire_grace, plan_row
from dataforge_scheduler.core.triggers import Trigger
from dataforge_scheduler.errors import DataForgeError, InvalidParams
from dataforge_scheduler.sql.models import ScheduledTask

if TYPE_CHECKING:
    from dataforge_scheduler.celery.beat import DatabaseScheduler

__all__ = ["RowPlanner"]

logger = logging.getLogger("dataforge_scheduler.celery.beat")  # the scheduler's own log


class RowPlanner:
    """Plans the rows of one scheduler's passes."""

    def __init__(self, scheduler: DatabaseScheduler) -> None:
        self._s = scheduler

    def first_run(self, row: ScheduledTask, now: datetime) -> Advance:
        trigger = self._trigger(row, now)
        if isinstance(trigger, Advance):
            return trigger
        try:
            advance = first_run_advance(row, trigger, now=now, grace=self._grace(row))
        except Exception as exc:
            return self._row_failed(row, now=now, exc=exc, what="planning its first run")
        if advance.next_run_at is not None:
            logger.info(
                "schedule %s (id %s) had no next_run_at: first run at %s",
                row.name,
                row.id,
                advance.next_run_at,
            )
        return advance

    def plan_guarded(
        self, row: ScheduledTask, now: datetime, *, in_flight: InFlight | None
    ) -> RowPlan:
        """``plan``, but one row's failure never stops the other rows of its batch."""
        try:
            return self.plan(row, now, in_flight=in_flight)
        except Exception as exc:
            advance = self._row_failed(row, now=now, exc=exc, what="planning its slots")
            return RowPlan(
                row=row, slots=[], next_run_at=advance.next_run_at, status=advance.status
            )

    def plan(
        self, row: ScheduledTask, now: datetime, *, in_flight: InFlight | None = None
    ) -> RowPlan:
        trigger = self._trigger(row, now)
        if isinstance(trigger, Advance):
            return RowPlan(
                row=row, slots=[], next_run_at=trigger.next_run_at, status=trigger.status
            )
        registered = self._s.is_registered(row.task_name)
        if not registered:
            self._report_unregistered(row)
        check = None
        if registered and row.task_name in self._s.runtime.registry:
            check = functools.partial(self._check_kwargs, row)
        return plan_row(
            row,
            trigger,
            now=now,
            grace=self._grace(row),
            catch_up_max_runs=self._s.settings.catch_up_max_runs,
            max_slots=self._s.max_slots_per_schedule,
            new_task_id=lambda: str(uuid.uuid4()),
            unregistered_error=None if registered else self._unregistered_error(row),
            check_kwargs=check,
            in_flight=in_flight,
            locks=self._s.takes_lock(row.task_name),
        )

    def _check_kwargs(self, row: ScheduledTask, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The kwargs a slot of ``row`` sends: checked against the task's registered
        params and coerced, as the API does; ``InvalidParams`` (reported once)."""
        try:
            return self._s.runtime.registry.validate_kwargs(row.task_name, kwargs)
        except InvalidParams as exc:
            key = (row.id, f"params:{exc}")
            if key not in self._s.reported_problems:
                self._s.reported_problems.add(key)
                logger.error(
                    "schedule %s (id %s): handler_kwargs do not match the params of %r: %s; "
                    "its slots are recorded as failed runs and not sent until they are fixed",
                    row.name,
                    row.id,
                    row.task_name,
                    exc,
                )
            raise

    def _trigger(self, row: ScheduledTask, now: datetime) -> Trigger | Advance:
        try:
            return self._s.trigger_for_row(row)
        except Exception as exc:
            return self._row_failed(row, now=now, exc=exc, what="trigger_for_row")

    def _row_failed(
        self, row: ScheduledTask, *, now: datetime, exc: Exception, what: str
    ) -> Advance:
        """What becomes of a row whose planning raised: disabled when the stored row can
        never fire (``InvalidSchedule`` and the library's other errors), else tried
        again after ``retry_failed_row_seconds`` (a subclass's hook failed)."""
        if isinstance(exc, DataForgeError):
            logger.error(
                "schedule %s (id %s) is invalid and was disabled: %s; fix it and resume it",
                row.name,
                row.id,
                exc,
            )
            return Advance(row.id, None, TaskStatus.DISABLED)
        retry = self._s.retry_failed_row_seconds
        logger.error(
            "%s failed for schedule %s (id %s): %s: %s; retrying in %.0f s",
            what,
            row.name,
            row.id,
            type(exc).__name__,
            exc,
            retry,
            exc_info=exc,
        )
        return Advance(row.id, now + timedelta(seconds=retry), TaskStatus.ACTIVE)

    def _grace(self, row: ScheduledTask) -> timedelta:
        return misfire_grace(row.misfire_grace_seconds, self._s.settings.misfire_grace_seconds)

    def _unregistered_error(self, row: ScheduledTask) -> str:
        return (
            f"task {row.task_name!r} is not registered in Celery app {self._s.app.main!r}: "
            "the slot was not sent"
        )

    def _report_unregistered(self, row: ScheduledTask) -> None:
        key = (row.id, row.task_name)
        if key in self._s.reported_problems:
            return
        self._s.reported_problems.add(key)
        logger.error(
            "schedule %s (id %s) names task %r, which is not registered in Celery app %r: "
            "its slots are recorded as failed runs and not sent. Import the task's module "
            "in the beat process (include= or autodiscover) or fix task_name.",
            row.name,
            row.id,
            row.task_name,
            self._s.app.main,
        )
