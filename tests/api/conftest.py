"""Fixtures of the API tests: a runtime on the test PostgreSQL and Redis, a registry of
test tasks, a recording dispatcher, the app, and an in-process client mounted at /api/v1
(httpx ``ASGITransport``, fast). ``tests/api/servers.py`` serves the app under a real
uvicorn on a loopback port for the tests that need a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tests.api.helpers import HEADERS, PREFIX, RecordingDispatcher, make_registry, make_settings

from dataforge_scheduler.api import ApiApp, create_app
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql.models import create_all


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> TaskRegistry:
    return make_registry()


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def runtime(
    pg: Any,
    pg_url: str,
    redis_url: str,
    redis_client: Any,
    key_prefix: str,
    registry: TaskRegistry,
    dispatcher: RecordingDispatcher,
) -> Iterator[Runtime]:
    """A runtime on the test database (emptied after) and Redis (keys deleted after)."""
    create_all(pg)
    runtime = Runtime(make_settings(pg_url, redis_url, key_prefix), registry=registry, engine=pg)
    runtime.dispatcher = dispatcher
    yield runtime
    if runtime._backend is not None:
        runtime._backend.close()


@pytest.fixture
def app(runtime: Runtime) -> ApiApp:
    return create_app(runtime, heartbeat_seconds=0.5)


@pytest.fixture
async def client(app: ApiApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, root_path=PREFIX)
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://testserver{PREFIX}", headers=HEADERS
    ) as client:
        yield client
