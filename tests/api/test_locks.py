"""Locks over HTTP: every held lock, one schedule's lock, force release (audited)."""

from __future__ import annotations

import httpx
import pytest
from tests.api.helpers import add_schedule

from dataforge_scheduler.core.ports import LockOwner
from dataforge_scheduler.redis.keys import schedule_scope, task_name_scope
from dataforge_scheduler.runtime import Runtime

pytestmark = pytest.mark.anyio


def _hold(runtime: Runtime, scope: str, task_id: str = "celery-1") -> None:
    owner = LockOwner(celery_task_id=task_id, execution_id=7, hostname="w1", pid=123)
    runtime.locks.acquire(scope, owner, ttl=60)


async def test_lists_every_held_lock_with_holder_and_ttl(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    _hold(runtime, schedule_scope(row.id))
    _hold(runtime, task_name_scope("dftest.report"), task_id="celery-2")

    response = await client.get("/tasks/locks")

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 2
    by_scope = {item["scope"]: item for item in body["items"]}
    held = by_scope[f"task:{row.id}"]
    assert held["scheduled_task_id"] == row.id
    assert (held["celery_task_id"], held["hostname"], held["pid"]) == ("celery-1", "w1", 123)
    assert 0 < held["ttl_seconds"] <= 60
    assert by_scope["name:dftest.report"]["scheduled_task_id"] is None
    assert "token" not in held


async def test_one_lock_or_unlocked(client: httpx.AsyncClient, runtime: Runtime) -> None:
    row = add_schedule(runtime)
    free = (await client.get(f"/tasks/{row.id}/lock")).json()
    _hold(runtime, schedule_scope(row.id))
    held = (await client.get(f"/tasks/{row.id}/lock")).json()
    detail = (await client.get(f"/tasks/{row.id}")).json()

    assert free == {"scheduled_task_id": row.id, "locked": False, "lock": None}
    assert held["locked"] is True
    assert held["lock"]["celery_task_id"] == "celery-1"
    assert detail["locked"] is True
    assert (await client.get("/tasks/8888/lock")).status_code == 404


async def test_release_answers_what_was_released_and_is_audited(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    _hold(runtime, schedule_scope(row.id))

    first = await client.post(f"/tasks/{row.id}/release-lock")
    second = await client.post(f"/tasks/{row.id}/release-lock")

    assert first.status_code == 200
    assert first.json()["released"] is True
    assert first.json()["lock"]["celery_task_id"] == "celery-1"
    assert second.json() == {"scheduled_task_id": row.id, "released": False, "lock": None}
    assert runtime.locks.get(schedule_scope(row.id)) is None
    audit = (await client.get("/audit", params={"action": "release_lock"})).json()
    assert [entry["after"] for entry in audit["items"]] == [{"released": False}, {"released": True}]
    assert audit["items"][1]["before"]["celery_task_id"] == "celery-1"
    assert (await client.post("/tasks/8888/release-lock")).status_code == 404


async def test_locks_and_registered_are_not_read_as_ids(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    registered = await client.get("/tasks/registered")
    locks = await client.get("/tasks/locks")
    post_locks = await client.post("/tasks/locks")
    delete_registered = await client.delete("/tasks/registered")

    assert registered.status_code == 200
    assert registered.json()["dftest.report"] == {
        "name": "Report",
        "description": "builds a report",
        "category": "reports",
        "params": [
            {"name": "days", "type": "int", "required": True, "label": "Days"},
            {"name": "fmt", "type": "str", "required": False, "label": "Format"},
        ],
    }
    assert locks.status_code == 200
    assert locks.json() == {"items": [], "total": 0}
    assert post_locks.status_code == 405
    assert post_locks.headers["allow"] == "GET"
    assert delete_registered.status_code == 405
