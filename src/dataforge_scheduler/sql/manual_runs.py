"""The statement behind "run now": a ``pending`` execution row with trigger ``manual``.

The API inserts this row (with the Celery task id it is about to use) in the same
transaction as the audit row, commits, and only then sends the message, exactly as a
scheduler claims a slot before sending it. The worker then moves this same row to
``running`` and on to its outcome (``store.start_execution`` finds it by Celery task id).
Once the broker took the message, ``mark_manual_sent`` records ``sent_at``: the reaper
judges a ``pending`` row by how long ago it was sent (or created, when never sent).
Manual runs have ``scheduled_for`` NULL, so they never collide with claimed slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.sql.models import TaskExecution
from dataforge_scheduler.sql.store.common import aware_now, json_safe

__all__ = ["create_manual_execution", "mark_manual_sent"]


def create_manual_execution(
    session: Session,
    *,
    scheduled_task_id: int | None,
    task_name: str,
    celery_task_id: str,
    kwargs: Mapping[str, Any],
    now: datetime,
) -> TaskExecution:
    """Insert the ``pending`` row of a manual run (flushed, not committed)."""
    execution = TaskExecution(
        scheduled_task_id=scheduled_task_id,
        task_name=task_name,
        celery_task_id=celery_task_id,
        trigger=ExecutionTrigger.MANUAL,
        status=ExecutionStatus.PENDING,
        created_at=aware_now(now),
        kwargs=json_safe(dict(kwargs)),
    )
    session.add(execution)
    session.flush()
    return execution


def mark_manual_sent(session: Session, execution_id: int, *, now: datetime) -> None:
    """Record that the manual run's message reached the broker (the first send wins)."""
    session.execute(
        update(TaskExecution)
        .where(TaskExecution.id == execution_id, TaskExecution.sent_at.is_(None))
        .values(sent_at=aware_now(now))
    )
