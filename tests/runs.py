"""Test helpers over the store's run statements: start or finish a run and read the row
back as an ORM object (the store itself answers plain values)."""

from __future__ import annotations

from typing import Any

from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution
from dataforge_scheduler.sql.store import Session


def start(session: Session, **arguments: Any) -> TaskExecution | None:
    """``store.start_run``, then the row; None for a duplicate delivery."""
    started = store.start_run(session, **arguments)
    if started is None:
        return None
    return session.get(TaskExecution, started.execution_id, populate_existing=True)


def finish(session: Session, **arguments: Any) -> TaskExecution | None:
    """``store.finish_run``, then the row; None when nothing was finished."""
    finished = store.finish_run(session, **arguments)
    if finished is None:
        return None
    return session.get(TaskExecution, finished.execution_id, populate_existing=True)


def manual(session: Session, **arguments: Any) -> TaskExecution:
    """``store.create_manual_run`` (``scheduled_task_id`` given as an id), then the row."""
    schedule_id = arguments.pop("scheduled_task_id", None)
    schedule = None if schedule_id is None else store.get_schedule(session, schedule_id)
    run = store.create_manual_run(session, schedule=schedule, **arguments)
    found = session.get(TaskExecution, run.execution_id)
    assert found is not None
    return found


def celery_id(runtime: Any, execution_id: int) -> str:
    """The Celery task id of execution ``execution_id``: what names its log."""
    with runtime.session() as session:
        return str(store.get_execution(session, execution_id).celery_task_id)
