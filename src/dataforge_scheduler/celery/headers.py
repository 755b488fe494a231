"""Names of the message headers dataforge puts on the runs it sends.

Headers carry what the user's function should not see (the trigger, the slot, the
execution row's id); ``scheduled_task_id`` travels in kwargs instead, as in the seed.
In a worker a custom header is visible both as ``request.<name>`` and in
``request.headers``; in eager mode only in ``request.headers`` (celery-5.7-facts §13),
so read them with ``header()``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EXECUTION_ID", "SLOT", "TRIGGER", "header"]

TRIGGER = "df_trigger"  # "schedule" | "manual" | "retry"
SLOT = "df_slot"  # ISO-8601 UTC instant of the slot a scheduler claimed
EXECUTION_ID = "df_execution_id"  # id of the task_executions row made for this send


def header(request: Any, name: str) -> Any:
    """Read a custom header from a Celery request, worker or eager mode alike."""
    headers = getattr(request, "headers", None) or {}
    if name in headers:
        return headers[name]
    return getattr(request, name, None)
