"""The service's FastAPI app: its own route and the mounted scheduler API both answer.

Requests go through httpx's ASGI transport (FastAPI's recommended async client): no
server, no port. Starlette's ``TestClient`` now asks for ``httpx2`` and warns with
``httpx``, which this suite's ``filterwarnings = error`` would turn into a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from dataforge_scheduler import Runtime

from app.web import API_PREFIX, create_web_app

pytestmark = pytest.mark.anyio

KEY = "web-test-key-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def web(dataforge_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_web_app(dataforge_runtime, api_keys=[KEY]))
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        yield client


async def test_the_service_route_answers(web: httpx.AsyncClient) -> None:
    response = await web.get("/")

    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert body["scheduler_api"] == API_PREFIX
    assert {"dataforge.sync_accounts", "dataforge.cleanup_expired"} <= set(body["registered_tasks"])


async def test_the_mounted_api_answers_health_without_a_key(web: httpx.AsyncClient) -> None:
    response = await web.get(f"{API_PREFIX}/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_the_mounted_api_wants_a_key_for_the_rest(web: httpx.AsyncClient) -> None:
    assert (await web.get(f"{API_PREFIX}/tasks")).status_code == 401
    with_key = await web.get(f"{API_PREFIX}/tasks", headers={"X-API-Key": KEY})
    assert with_key.status_code == 200
    assert with_key.json()["items"] == []


async def test_the_two_openapi_documents_stay_apart(web: httpx.AsyncClient) -> None:
    service = (await web.get("/openapi.json")).json()
    scheduler = (await web.get(f"{API_PREFIX}/openapi.json")).json()

    assert "/" in service["paths"]
    assert "/tasks" not in service["paths"]
    assert "/tasks" in scheduler["paths"]
    assert scheduler["servers"][0]["url"].endswith(API_PREFIX)
