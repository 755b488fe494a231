"""The live log stream while a real Celery worker runs a task that logs.

"Run now" goes through the real ``CeleryDispatcher`` (``setup()`` set it on the runtime
the API serves); the worker moves the API's ``pending`` row to ``running`` and on to
``success``, and ``task_log`` lines reach the SSE client live: the task writes its later
lines only after the client has received the first one and opened the gate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from tests.api.apps.sse_worker_app import TASK, build_app, gate_key
from tests.api.servers import Event, serve, sse_events
from tests.integration.procs import CeleryProcess, service_env, wait_until

from dataforge_scheduler.api import create_app
from dataforge_scheduler.runtime import runtime_for

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

APP = "tests.api.apps.sse_worker_app"


@pytest.fixture
def env(pg: Any, pg_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    prefix = f"dftest-sse-{uuid.uuid4().hex[:8]}"
    yield service_env(database_url=pg_url, redis_url=redis_url, key_prefix=prefix)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def test_sse_receives_lines_live_while_a_real_worker_runs(
    env: dict[str, str], tmp_path: Path
) -> None:
    worker = CeleryProcess(
        "worker", APP, env=env, log_path=tmp_path / "worker.log", args=["-P", "solo"]
    )
    celery_app = build_app(env)
    runtime = runtime_for(celery_app)
    api = create_app(runtime)
    headers = {"X-API-Key": "live-key-0123456789abc"}
    received: list[Event] = []
    try:
        worker.start().wait_ready()
        with serve(api) as url, httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            schedule = client.post(
                "/tasks", json={"name": "gated", "task_type": "manual", "task_name": TASK}
            ).json()
            run = client.post(f"/tasks/{schedule['id']}/run")
            assert run.status_code == 202, run.text
            accepted = run.json()
            with client.stream("GET", f"/executions/{accepted['execution_id']}/logs") as stream:
                for event in sse_events(stream):
                    if not isinstance(event, Event):
                        continue
                    received.append(event)
                    if event.data.endswith("first line"):
                        runtime.backend.client.set(
                            gate_key(env["DATAFORGE_KEY_PREFIX"], accepted["task_id"]), 1
                        )
                    if event.event == "end":
                        break
            detail = wait_until(
                lambda: (
                    (d := client.get(f"/executions/{accepted['execution_id']}").json())["status"]
                    == "success"
                    and d
                ),
                timeout=20,
                message="the run to succeed",
            )
    finally:
        worker.stop()
        runtime.close()

    logs = [event.data for event in received if event.event == "log"]
    assert [line.rsplit(" ", 2)[-2:] for line in logs] == [
        ["first", "line"],
        ["second", "line"],
        ["third", "line"],
    ], worker.output()[-3000:]
    assert [event.id for event in received if event.event == "log"] == ["0", "1", "2"]
    assert received[-1].event == "end"
    assert received[-1].json()["status"] == "success"
    assert detail["trigger"] == "manual"
    assert detail["celery_task_id"] == accepted["task_id"]
    assert "second line" in (detail["log"] or "")
