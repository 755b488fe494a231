"""``uvicorn app.main:app`` works from the environment alone, as in docker-compose.

A fresh interpreter imports ``app.main`` with only ``DATAFORGE_*`` variables set (a
SQLite file, the in-process stand-ins) and calls the app, as uvicorn would: the module
reads its settings, imports the task modules and mounts the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVICE_ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import asyncio, json
import httpx
from app.main import app

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
        index = await c.get("/")
        health = await c.get("/api/v1/health")
        tasks = await c.get("/api/v1/tasks/registered", headers={"X-API-Key": "first-key-01234567"})
    print(json.dumps({
        "index": [index.status_code, index.json()],
        "health": [health.status_code, health.json()],
        "tasks": [tasks.status_code, sorted(tasks.json())],
    }))

asyncio.run(main())
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=SERVICE_ROOT,
        env={**clean, "PYTHONPATH": str(SERVICE_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def service_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DATAFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
        "DATAFORGE_CELERY_BROKER_URL": "memory://",
        "DATAFORGE_CELERY_RESULT_BACKEND": "cache+memory://",
        "DATAFORGE_REDIS_URL": "memory://",
        "DATAFORGE_API_KEYS": "first-key-01234567,second-key-0123456",
        "DATAFORGE_SYNC_BATCH_SIZE": "25",
    }


def test_the_uvicorn_entry_point_serves_from_the_environment(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    done = _run(tmp_path, **service_env)

    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.splitlines()[-1])
    assert answers["index"][0] == 200
    assert answers["health"][0] == 200, answers["health"]
    status, registered = answers["tasks"]
    assert status == 200
    assert {"dataforge.cleanup_expired", "dataforge.sync_accounts"} <= set(registered)


def test_the_entry_point_refuses_to_start_without_api_keys(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    del service_env["DATAFORGE_API_KEYS"]

    done = _run(tmp_path, **service_env)

    assert done.returncode != 0
    assert "ConfigurationError" in done.stderr
    assert "api_keys" in done.stderr or "API key" in done.stderr
