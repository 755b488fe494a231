"""A Celery app whose task logs a line, waits for the test to open a gate, then logs more.

``celery -A tests.api.apps.sse_worker_app worker`` reads ``app`` (built from the
environment ``procs.service_env`` made); the test process builds the same app with
``build_app(env)``, whose runtime has the Celery dispatcher and a registry holding the
task, and serves the API on it. The gate (``<key_prefix>:gate:<celery task id>``) proves
the later lines are pushed live: they are written only after the client has received
the first one over SSE.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery

from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.registry import TaskRegistry, register_task
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup

TASK = "sse.gated"
GATE_TIMEOUT = 20.0


def gate_key(prefix: str, celery_task_id: str) -> str:
    return f"{prefix}:gate:{celery_task_id}"


def build_app(env: Mapping[str, str]) -> Celery:
    settings = Settings(
        database_url=env["DATAFORGE_DATABASE_URL"],
        redis_url=env["DATAFORGE_REDIS_URL"],
        celery_broker_url=env["DATAFORGE_CELERY_BROKER_URL"],
        celery_result_backend=env["DATAFORGE_CELERY_RESULT_BACKEND"],
        key_prefix=env["DATAFORGE_KEY_PREFIX"],
        api_keys=["live-key-0123456789abc"],
        celery_worker_concurrency=1,
        log_flush_interval=0.05,
    )
    app = Celery("sse_worker_app")
    registry = TaskRegistry()
    runtime = setup(app, settings, registry=registry)
    broker_prefix = env["DATAFORGE_TEST_BROKER_PREFIX"]
    app.conf.broker_transport_options["global_keyprefix"] = broker_prefix
    app.conf.result_backend_transport_options = {
        **(app.conf.result_backend_transport_options or {}),
        "global_keyprefix": broker_prefix,
    }

    @register_task(name="Gated logger", category="test", registry=registry)
    @app.task(base=DataForgeTask, bind=True, name=TASK)
    def gated(self: DataForgeTask, scheduled_task_id: int | None = None) -> str:
        task_log("first line")
        deadline = time.monotonic() + GATE_TIMEOUT
        key = gate_key(settings.key_prefix, str(self.request.id))
        while not runtime.backend.client.exists(key):
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.05)
        task_log("second line")
        task_log("third line")
        return "done"

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        built = build_app(os.environ)
        globals()["app"] = built
        return built
    raise AttributeError(name)
