"""How a run is published: the ``RunMessage`` and the one function that builds it.

The beat scheduler (every claimed slot) and "run now" (the API, the CLI, the pytest
plugin) publish a run the same way: its ``pending`` execution row exists, and
``message_for`` turns that ``ClaimedSlot`` into the message a ``Dispatcher`` sends. The
Celery task id is always the one stored on the row, which is how the worker finds it.
``expires`` is always an absolute instant: a slot's counts from its slot time, a manual
run's from when its row was made, a backfill slot's from when it was sent. To change how
every run is published (routing, extra headers), override ``message_for`` on the
dispatcher (``CeleryDispatcher``).

Headers carry what the user's function should not see (the trigger, the slot, the
execution row's id, the schedule's overlap policy); ``scheduled_task_id`` travels in
kwargs instead, as in the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dataforge_scheduler.core.enums import ExecutionTrigger
from dataforge_scheduler.core.slots import ClaimedSlot

__all__ = ["EXECUTION_ID", "OVERLAP", "SLOT", "TRIGGER", "RunMessage", "message_for"]

TRIGGER = "df_trigger"  # "schedule" | "manual" | "retry" | "backfill"
SLOT = "df_slot"  # ISO-8601 UTC instant of the slot a scheduler claimed
EXECUTION_ID = "df_execution_id"  # id of the task_executions row made for this send
OVERLAP = "df_overlap"  # the schedule's overlap_policy (an OverlapPolicy value)


@dataclass(frozen=True)
class RunMessage:
    """One run as published: task name, Celery task id, kwargs, ``send_task`` options
    (``queue``, ``priority``, ``expires`` as an aware datetime...) and headers."""

    task_name: str
    task_id: str
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)


def message_for(run: ClaimedSlot) -> RunMessage:
    """The message that publishes ``run`` (see the module docstring)."""
    options: dict[str, Any] = {}
    if run.queue:
        options["queue"] = run.queue
    if run.priority is not None:
        options["priority"] = run.priority
    # a backfill's slot is long past: its run expires counting from its send
    late = run.scheduled_for is None or run.trigger is ExecutionTrigger.BACKFILL
    base = run.claimed_at if late else run.scheduled_for
    if run.expire_seconds and base is not None:
        options["expires"] = base + timedelta(seconds=run.expire_seconds)
    headers: dict[str, Any] = {TRIGGER: run.trigger.value, EXECUTION_ID: run.execution_id}
    if run.scheduled_for is not None:
        headers[SLOT] = run.scheduled_for.isoformat()
    if run.overlap_policy is not None:
        headers[OVERLAP] = str(run.overlap_policy)
    return RunMessage(
        task_name=run.task_name,
        task_id=run.celery_task_id,
        kwargs=dict(run.kwargs),
        options=options,
        headers=headers,
    )
