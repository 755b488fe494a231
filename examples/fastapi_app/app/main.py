"""What uvicorn serves: ``uvicorn app.main:app``.

Settings come from the environment (``DATAFORGE_*``, read in ``app.celery_app``); the
API refuses to start without keys, so set ``DATAFORGE_API_KEYS``. The task modules are
imported here as the worker imports them (``include=``), so the API knows the registered
tasks and validates schedules against their params.
"""

from __future__ import annotations

from app.celery_app import celery_app, runtime
from app.web import create_web_app

__all__ = ["app"]

celery_app.loader.import_default_modules()
app = create_web_app(runtime)
