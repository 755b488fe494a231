"""The REST API: a pure ASGI 3 sub-app, no web framework and no Celery import.

``create_app(runtime, *, api_keys=None, authenticate=None, ...)`` returns the app; a
host serves it with any ASGI server or mounts it under any prefix (``/api/v1`` in the
docs). Modules: ``app`` (create_app, route table), ``routing``, ``http`` (request,
response), ``errors``, ``auth``, ``context``, ``sse`` (live logs), ``openapi``,
``schemas`` (pydantic models) and ``handlers``.
"""

from __future__ import annotations

from dataforge_scheduler.api.app import ApiApp, create_app
from dataforge_scheduler.api.auth import Principal

__all__ = ["ApiApp", "Principal", "create_app"]
