"""The API served by a real uvicorn on a loopback port, mounted at /api/v1 inside a
FastAPI and a Starlette host: every endpoint, every error class, the three ways to send
a key, the seed's ``curl`` lock commands, and no query-string key in the access log."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.api.helpers import KEY, PREFIX, READ_KEY, RecordingDispatcher, future
from tests.api.servers import Event, host_app, serve, sse_events
from tests.runs import celery_id

from dataforge_scheduler.api import ApiApp
from dataforge_scheduler.core.ports import LockOwner
from dataforge_scheduler.redis.keys import schedule_scope
from dataforge_scheduler.runtime import Runtime


@pytest.fixture(params=["fastapi", "starlette"])
def host(request: pytest.FixtureRequest, app: ApiApp) -> Iterator[str]:
    """Base URL of a host application that mounts the API at /api/v1."""
    with serve(host_app(request.param, app)) as url:
        yield url


@pytest.fixture
def api(host: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{host}{PREFIX}", headers={"X-API-Key": KEY}, timeout=10) as c:
        yield c


def test_the_host_still_serves_its_own_routes(host: str) -> None:
    assert httpx.get(f"{host}/", timeout=10).status_code == 200


def test_every_endpoint_through_a_real_server(
    api: httpx.Client, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    cron = {"name": "n", "task_type": "cron", "task_name": "dftest.sync_accounts"}
    created = api.post("/tasks", json={**cron, "cron_expression": "*/5 * * * *"})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    assert len(api.get("/tasks", params={"search": "n"}).json()["items"]) == 1
    assert api.get(f"/tasks/{task_id}").json()["name"] == "n"
    assert api.put(f"/tasks/{task_id}", json={"description": "put"}).json()["version"] == 2
    assert api.patch(f"/tasks/{task_id}", json={"description": "patch"}).json()["version"] == 3
    run = api.post(f"/tasks/{task_id}/run", json={"kwargs": {}})
    assert run.status_code == 202
    assert dispatcher.sent[0].task_id == run.json()["task_id"]
    assert api.post(f"/tasks/{task_id}/pause").json()["status"] == "paused"
    assert api.post(f"/tasks/{task_id}/resume").json()["status"] == "active"
    history = api.get(f"/tasks/{task_id}/executions").json()
    assert history["items"][0]["id"] == run.json()["execution_id"]
    execution = api.get(f"/executions/{run.json()['execution_id']}").json()
    assert execution["status"] == "pending"
    assert "dftest.report" in api.get("/tasks/registered").json()
    assert api.get("/tasks/locks").json()["total"] == 0
    assert api.get(f"/tasks/{task_id}/lock").json()["locked"] is False
    assert api.post(f"/tasks/{task_id}/release-lock").json()["released"] is False
    preview = api.post("/schedules/preview", json={"task_type": "interval", "interval_seconds": 60})
    assert len(preview.json()["fire_times"]) == 10
    assert api.get("/health").json()["status"] == "ok"
    assert api.get("/openapi.json").json()["servers"] == [{"url": PREFIX}]
    actions = [entry["action"] for entry in api.get("/audit").json()["items"]]
    assert actions == ["release_lock", "resume", "pause", "run", "update", "update", "create"]
    assert api.delete(f"/tasks/{task_id}").status_code == 204


def test_every_error_class_through_a_real_server(host: str, api: httpx.Client) -> None:
    json_header = {"content-type": "application/json"}
    expected = {
        "no key": (httpx.get(f"{host}{PREFIX}/tasks", timeout=10), 401),
        "read-only write": (
            httpx.post(f"{host}{PREFIX}/tasks/1/pause", headers={"X-API-Key": READ_KEY}),
            403,
        ),
        "unknown id": (api.get("/tasks/123456"), 404),
        "unknown path": (api.get("/tasks/1/nothing"), 404),
        "wrong method": (api.put("/tasks"), 405),
        "bad id": (api.get("/tasks/x1"), 422),
        "malformed json": (api.post("/tasks", content=b"{", headers=json_header), 422),
        "not json": (api.post("/tasks", content=b"a", headers={"content-type": "text/plain"}), 415),
        "too large": (api.post("/tasks", content=b" " * (1_048_577), headers=json_header), 413),
        "validation": (api.post("/tasks", json={"task_type": "cron"}), 422),
    }
    for name, (response, status) in expected.items():
        assert response.status_code == status, (name, response.text)
        assert isinstance(response.json()["detail"], str | list), name
    assert expected["wrong method"][0].headers["allow"] == "GET, POST"


@pytest.mark.parametrize("form", ["header", "bearer", "query"])
def test_each_key_form_through_a_real_server(host: str, form: str) -> None:
    url = f"{host}{PREFIX}/tasks"
    headers = {"header": {"X-API-Key": KEY}, "bearer": {"Authorization": f"Bearer {KEY}"}}
    params = {"api_key": KEY} if form == "query" else {}
    response = httpx.get(url, headers=headers.get(form, {}), params=params, timeout=10)
    assert response.status_code == 200


def _curl(*args: str) -> Any:
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_seed_curl_lock_commands(host: str, runtime: Runtime) -> None:
    """The seed's operator commands, verbatim but for host and key."""
    with runtime.session() as session:
        from dataforge_scheduler.sql import store

        row = store.create_schedule(
            session,
            {"name": "seed", "task_type": "date", "task_name": "dftest.sync_accounts",
             "run_at": future(days=1)},
            now=future(), default_timezone="UTC",
        )  # fmt: skip
    owner = LockOwner(celery_task_id="stuck-task", hostname="worker-1", pid=42)
    runtime.locks.acquire(schedule_scope(row.id), owner, ttl=300)

    held = _curl("-X", "GET", f"{host}/api/v1/tasks/locks?api_key={KEY}")
    released = _curl("-X", "POST", f"{host}/api/v1/tasks/{row.id}/release-lock?api_key={KEY}")
    after = _curl("-X", "GET", f"{host}/api/v1/tasks/locks?api_key={KEY}")

    assert [item["celery_task_id"] for item in held["items"]] == ["stuck-task"]
    assert released["released"] is True
    assert released["lock"]["hostname"] == "worker-1"
    assert after == {"items": [], "total": 0}


@pytest.mark.parametrize("mounting", ["alone", "mount_api", "fastapi", "starlette"])
def test_query_keys_never_reach_the_access_log(
    app: ApiApp, caplog: pytest.LogCaptureFixture, mounting: str
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    served = app if mounting == "alone" else host_app(mounting, app)
    prefix = "" if mounting == "alone" else PREFIX
    with serve(served, access_log=True) as url:
        ok = httpx.get(f"{url}{prefix}/tasks", params={"api_key": KEY, "page": 1}, timeout=10)
        bad = httpx.get(f"{url}{prefix}/tasks", params={"api_key": KEY + "x"}, timeout=10)
    assert (ok.status_code, bad.status_code) == (200, 401)
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert len(lines) == 2, lines
    assert all("api_key=***" in line for line in lines)
    assert not any(KEY in line for line in lines)


def test_sse_through_a_host(api: httpx.Client, runtime: Runtime) -> None:
    created = api.post(
        "/tasks", json={"name": "m", "task_type": "manual", "task_name": "dftest.sync_accounts"}
    ).json()
    execution_id = api.post(f"/tasks/{created['id']}/run").json()["execution_id"]
    runtime.logbus.append(celery_id(runtime, execution_id), ["hello"])
    seen: list[str] = []
    with api.stream("GET", f"/executions/{execution_id}/logs") as response:
        for event in sse_events(response):
            if isinstance(event, Event) and event.event == "log":
                seen.append(event.data)
                runtime.logbus.finish(celery_id(runtime, execution_id), "success", ttl=60)
            elif isinstance(event, Event):
                seen.append(f"end:{event.json()['status']}")
                break
    assert seen == ["hello", "end:success"]
