"""``setup()``: the one place start-up work happens.

It applies the settings to the Celery app, configures the registry's naming rule, builds
the ``Runtime``, binds it to the app, connects the execution-history signal handlers
(once per process; they act only on DataForgeTask runs) and adds the history writer to
the app's workers. It opens no connection:
engines and Redis clients are made lazily, per process, on first use.
"""

from __future__ import annotations

import logging
from typing import Any

from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.celery.maintenance import register_maintenance_tasks
from dataforge_scheduler.celery.signals import connect_signals
from dataforge_scheduler.celery.writer import add_history_writer
from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.core.ports import Dispatcher
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime, bind_runtime
from dataforge_scheduler.settings import Settings

__all__ = ["setup"]

logger = logging.getLogger(__name__)


def setup(
    celery_app: Any,
    settings: Settings | None = None,
    *,
    registry: TaskRegistry | None = None,
    clock: Clock | None = None,
    dispatcher: Dispatcher | None = None,
) -> Runtime:
    """Turn ``celery_app`` into a dataforge-scheduler app and return its ``Runtime``.

    ``settings`` defaults to ``Settings.from_env()`` (``DATAFORGE_*`` variables).
    ``dispatcher`` publishes every run, scheduled and manual (default: a
    ``CeleryDispatcher`` on the app; pass a subclass to route or add headers). Calling
    it again for the same app replaces the runtime and re-applies the settings.
    """
    if not hasattr(celery_app, "conf") or not hasattr(celery_app, "tasks"):
        raise ConfigurationError(
            f"setup() needs a Celery application, got {type(celery_app).__name__}"
        )
    settings = settings if settings is not None else Settings.from_env()
    runtime = Runtime(
        settings,
        registry=registry,
        clock=clock,
        dispatcher=dispatcher if dispatcher is not None else CeleryDispatcher(celery_app),
    )
    runtime.registry.configure(task_name_prefix=settings.task_name_prefix)
    celery_app.conf.update(_celery_config(settings))
    bind_runtime(celery_app, runtime)
    connect_signals()
    add_history_writer(celery_app)
    register_maintenance_tasks(celery_app, runtime)
    logger.debug("dataforge-scheduler set up on Celery app %r: %r", celery_app.main, runtime)
    return runtime


def _celery_config(settings: Settings) -> dict[str, Any]:
    # includes beat_scheduler = "dataforge_scheduler.DatabaseScheduler"
    return settings.celery_config()
