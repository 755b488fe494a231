"""A ``DatabaseScheduler`` subclass using every hook (partitioning, a custom trigger, a
send callback), and a dispatcher that routes every run, scheduled or manual.

``PartitionedScheduler`` claims only the schedules of the queues it is given, so several
beat processes can split the table between them (each still safe to run twice: the
database claim makes a slot go out once). Schedules whose description contains
``[weekdays]`` fire only Monday to Friday in their own timezone. Sends are counted per
task. ``TenantDispatcher`` sends a run whose kwargs name a ``tenant`` to that tenant's
queue with an ``x-tenant`` header: the beat and "run now" publish through the same
dispatcher, so both are routed alike.

Wire the dispatcher where the app is set up, then run one beat per partition::

    runtime = dfs.setup(celery_app, settings, dispatcher=TenantDispatcher(celery_app))

    DATAFORGE_SCHEDULER_QUEUES=reports,exports \\
        celery -A myapp.celery_app beat -S examples.custom_scheduler:PartitionedScheduler
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement

from dataforge_scheduler.celery.beat import ClaimedSlot, DatabaseScheduler, RunMessage
from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.core.triggers import Trigger
from dataforge_scheduler.sql.models import ScheduledTask

__all__ = ["PartitionedScheduler", "TenantDispatcher", "WeekdaysOnly", "tenant_routed"]

logger = logging.getLogger(__name__)

WEEKDAYS_MARKER = "[weekdays]"
QUEUES_ENV = "DATAFORGE_SCHEDULER_QUEUES"


class WeekdaysOnly:
    """A trigger that keeps the fires of ``inner`` falling on Monday to Friday in ``zone``."""

    #: Most weekend fires skipped in a row before giving up (an inner trigger that only
    #: fires at weekends never fires here).
    max_skips = 10_000

    def __init__(self, inner: Trigger, zone: ZoneInfo) -> None:
        self.inner = inner
        self.zone = zone

    def next_after(self, instant: datetime) -> datetime | None:
        fire = self.inner.next_after(instant)
        for _ in range(self.max_skips):
            if fire is None or fire.astimezone(self.zone).weekday() < 5:
                return fire
            fire = self.inner.next_after(fire)
        return None


class PartitionedScheduler(DatabaseScheduler):
    """Claims the schedules of ``queues`` (default: ``$DATAFORGE_SCHEDULER_QUEUES``,
    comma-separated; empty claims every schedule)."""

    def __init__(self, app: Any, *, queues: list[str] | None = None, **kwargs: Any) -> None:
        # set before super().__init__(), which calls setup_schedule()
        if queues is None:
            queues = os.environ.get(QUEUES_ENV, "").split(",")
        self.queues = sorted({queue.strip() for queue in queues if queue.strip()})
        self.sent_per_task: Counter[str] = Counter()
        super().__init__(app, **kwargs)

    def claim_filter(self) -> ColumnElement[bool] | None:
        if not self.queues:
            return None
        return ScheduledTask.queue.in_(self.queues)

    def trigger_for_row(self, row: ScheduledTask) -> Trigger:
        trigger = super().trigger_for_row(row)
        if WEEKDAYS_MARKER not in (row.description or ""):
            return trigger
        return WeekdaysOnly(trigger, ZoneInfo(row.timezone or self.settings.celery_timezone))

    def after_send(self, slot: ClaimedSlot, message: RunMessage) -> None:
        self.sent_per_task[message.task_name] += 1
        logger.debug(
            "partition %s sent %s (%d so far)",
            ",".join(self.queues) or "*",
            message.task_name,
            self.sent_per_task[message.task_name],
        )


def tenant_routed(message: RunMessage, run: ClaimedSlot) -> RunMessage:
    """``message`` sent to the queue of the tenant ``run``'s kwargs name, if any."""
    tenant = run.kwargs.get("tenant")
    if not tenant:
        return message
    options = {**message.options, "queue": f"tenant-{tenant}"}
    return replace(message, options=options, headers={**message.headers, "x-tenant": tenant})


class TenantDispatcher(CeleryDispatcher):
    """Routes each run to its tenant's queue; scheduled slots and "run now" alike."""

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        return tenant_routed(super().message_for(run), run)
