"""``ScheduleFactory``: scheduled tasks for tests, made through the store.

Rows go through ``store.create_schedule`` (every field validated, ``next_run_at``
computed in the same transaction) after the same registry checks as the API's
``POST /tasks`` (``task_name`` registered, ``handler_kwargs`` fitting its params), so
a test never starts from a row the library would refuse. ``validate=False`` skips the
registry checks, to plant the bad rows that ``dataforge-scheduler check`` or the
scheduler must report (as raw SQL could insert them).
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.core.enums import TaskType
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask

__all__ = ["ScheduleFactory"]

_counter = itertools.count(1)


class ScheduleFactory:
    """``factory.make(task_name=..., task_type="interval", **fields) -> ScheduledTask``.

    Defaults per type, used only when the field is not given: ``interval_seconds=60``
    for ``interval``, ``cron_expression="* * * * *"`` for ``cron``, ``run_at`` one hour
    after the clock for ``date``. ``name`` defaults to a unique ``"<task_name>-<n>"``.
    ``created_at`` (the anchor of an interval grid) is the clock's time.
    """

    def __init__(self, runtime: Runtime, *, clock: Clock | None = None) -> None:
        self.runtime = runtime
        self.clock: Clock = clock if clock is not None else runtime.clock

    def __call__(
        self, *, task_name: str, task_type: str = "interval", **fields: Any
    ) -> ScheduledTask:
        return self.make(task_name=task_name, task_type=task_type, **fields)

    def make(
        self,
        *,
        task_name: str,
        task_type: str | TaskType = "interval",
        validate: bool = True,
        **fields: Any,
    ) -> ScheduledTask:
        """Create a schedule and return it (detached; ``next_run_at`` filled in).

        Raises ``UnknownTask`` / ``InvalidParams`` (registry, unless ``validate=False``),
        ``InvalidSchedule`` naming the bad field, ``ConflictError`` for a taken name.
        """
        values: dict[str, Any] = {"task_name": task_name, "task_type": task_type, **fields}
        kind = str(getattr(task_type, "value", task_type))
        now = self.clock.now()
        if kind == TaskType.INTERVAL.value:
            values.setdefault("interval_seconds", 60)
        elif kind == TaskType.CRON.value:
            values.setdefault("cron_expression", "* * * * *")
        elif kind == TaskType.DATE.value:
            values.setdefault("run_at", now + timedelta(hours=1))
        values.setdefault("name", f"{task_name}-{next(_counter)}")
        kwargs = dict(values.get("handler_kwargs") or {})
        if validate:
            registry = self.runtime.registry
            registry.validate_kwargs(task_name, kwargs)  # every param, required ones too
            kwargs = registry.validate_kwargs(task_name, kwargs, partial=True)
        values["handler_kwargs"] = kwargs
        with self.runtime.session() as session:
            schedule = store.create_schedule(
                session,
                values,
                now=now,
                default_timezone=self.runtime.settings.celery_timezone,
            )
            schedule_id = schedule.id
        return self.get(schedule_id)  # read back whole: server defaults included

    def get(self, schedule: ScheduledTask | int) -> ScheduledTask:
        """The schedule as stored now (counters, ``next_run_at``, ``last_status``)."""
        schedule_id = schedule.id if isinstance(schedule, ScheduledTask) else schedule
        with self.runtime.session_factory() as session:
            row = store.get_schedule(session, schedule_id)
            session.expunge(row)
            return row
