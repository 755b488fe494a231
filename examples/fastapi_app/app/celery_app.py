"""The Celery app, made a dataforge-scheduler app by ``setup()``.

``include=`` names the task modules: the worker and beat import them at start-up, so
adding a task module means adding it here, nothing else. ``setup()`` applies the
settings to ``celery_app.conf`` (broker, timezone, time limits, the
``DatabaseScheduler`` as beat scheduler) and opens no connection.

    celery -A app.celery_app worker -l INFO
    celery -A app.celery_app beat -l INFO
"""

from __future__ import annotations

from celery import Celery
from dataforge_scheduler import setup

from app.config import AppSettings

__all__ = ["TASK_MODULES", "celery_app", "runtime", "settings"]

TASK_MODULES = ["app.tasks.sync_tasks", "app.tasks.cleanup_tasks"]

settings = AppSettings.from_env()
celery_app = Celery("fastapi_app", include=TASK_MODULES)
runtime = setup(celery_app, settings)
