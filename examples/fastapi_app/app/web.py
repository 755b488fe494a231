"""The FastAPI app factory: the service's own routes, and the scheduler API under /api/v1.

``create_web_app(runtime)`` builds the app around a ``Runtime`` it is given, so tests
pass the plugin's runtime and ``app.main`` the one ``setup()`` returned. The
dataforge-scheduler API is a plain ASGI sub-app: FastAPI mounts it like any other, and
its paths, auth (API keys) and OpenAPI document are its own.
"""

from __future__ import annotations

from typing import Any

from dataforge_scheduler import Runtime
from dataforge_scheduler.api import create_app
from fastapi import FastAPI

__all__ = ["API_PREFIX", "create_web_app"]

API_PREFIX = "/api/v1"


def create_web_app(runtime: Runtime, *, api_keys: list[str] | None = None) -> FastAPI:
    """The service's FastAPI app on ``runtime``; ``api_keys`` default to the settings'."""
    web = FastAPI(title="fastapi_app", summary="An example host of dataforge-scheduler")

    @web.get("/")
    def index() -> dict[str, Any]:
        """What this service is and where its scheduler API lives."""
        return {
            "service": "fastapi_app",
            "scheduler_api": API_PREFIX,
            "registered_tasks": runtime.registry.names(),
        }

    web.mount(API_PREFIX, create_app(runtime, api_keys=api_keys))
    return web
