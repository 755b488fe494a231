"""Names of the message headers dataforge puts on the runs it sends.

Headers carry what the user's function should not see (the trigger, the slot, the
execution row's id); ``scheduled_task_id`` travels in kwargs instead, as in the seed.
They live in the core because both faces write them: the scheduler and the API's "run
now" (which may not import the Celery face).
"""

from __future__ import annotations

__all__ = ["EXECUTION_ID", "SLOT", "TRIGGER"]

TRIGGER = "df_trigger"  # "schedule" | "manual" | "retry"
SLOT = "df_slot"  # ISO-8601 UTC instant of the slot a scheduler claimed
EXECUTION_ID = "df_execution_id"  # id of the task_executions row made for this send
