"""A Celery app with DataForgeTask test tasks, for real prefork workers.

``celery -A tests.integration.apps.worker_app worker`` reads ``app`` (built on first
access from the environment ``procs.service_env`` made); a test process builds the same
app from that mapping with ``build_app(env)`` to send tasks. Tasks record that their
body ran with ``INCR <key_prefix>:body:<task>:<scheduled_task_id>`` so a test can count
body runs independently of the execution rows.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

import redis
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.errors import LockLost
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup

__all__ = ["body_runs", "build_app"]


def body_runs(client: redis.Redis, prefix: str, task: str, scheduled_task_id: Any) -> int:
    """How many times ``task``'s body ran for ``scheduled_task_id``."""
    value = client.get(f"{prefix}:body:{task}:{scheduled_task_id}")
    return int(value or 0)


def build_app(env: Mapping[str, str]) -> Celery:
    """The test app configured from ``env`` (the mapping ``service_env`` returns)."""
    settings = Settings(
        database_url=env["DATAFORGE_DATABASE_URL"],
        redis_url=env["DATAFORGE_REDIS_URL"],
        celery_broker_url=env["DATAFORGE_CELERY_BROKER_URL"],
        celery_result_backend=env["DATAFORGE_CELERY_RESULT_BACKEND"],
        key_prefix=env["DATAFORGE_KEY_PREFIX"],
        celery_worker_concurrency=2,
        log_flush_interval=0.05,
    )
    app = Celery("worker_app")
    runtime = setup(app, settings, registry=TaskRegistry())
    broker_prefix = env["DATAFORGE_TEST_BROKER_PREFIX"]
    app.conf.broker_transport_options["global_keyprefix"] = broker_prefix
    app.conf.result_backend_transport_options = {
        **(app.conf.result_backend_transport_options or {}),
        "global_keyprefix": broker_prefix,
    }
    _lock_tasks(app, runtime)
    _other_tasks(app, runtime)
    return app


def _lock_tasks(app: Celery, runtime: Runtime) -> None:
    prefix = runtime.settings.key_prefix

    def mark(task: str, scheduled_task_id: Any) -> None:
        runtime.backend.client.incr(f"{prefix}:body:{task}:{scheduled_task_id}")

    @app.task(base=DataForgeTask, bind=True, name="wt.hello")
    def hello(self: DataForgeTask, scheduled_task_id: int | None = None, **kwargs: Any) -> dict:
        mark("hello", scheduled_task_id)
        task_log("开始同步账号...", kwargs.get("n", 0))
        for number in range(int(kwargs.get("lines", 3))):
            task_log("line", number)
        return {"synced_count": 10, "pid": os.getpid()}

    @app.task(base=DataForgeTask, bind=True, name="wt.slow", lock_ttl=1.0, lock_auto_renew=True)
    def slow(
        self: DataForgeTask, scheduled_task_id: int | None = None, seconds: float = 2.5
    ) -> str:
        mark("slow", scheduled_task_id)
        task_log("slow start")
        time.sleep(seconds)  # longer than lock_ttl: only the watchdog keeps the lock
        task_log("slow end")
        return "done"

    @app.task(
        base=DataForgeTask, bind=True, name="wt.flaky", max_retries=2, default_retry_delay=0.2
    )
    def flaky(self: DataForgeTask, scheduled_task_id: int | None = None) -> None:
        mark("flaky", scheduled_task_id)
        task_log("attempt", self.request.retries)
        try:
            raise ValueError(f"boom on attempt {self.request.retries}")
        except ValueError as exc:
            raise self.retry(exc=exc) from exc


def _other_tasks(app: Celery, runtime: Runtime) -> None:
    prefix = runtime.settings.key_prefix

    def mark(task: str, scheduled_task_id: Any) -> None:
        runtime.backend.client.incr(f"{prefix}:body:{task}:{scheduled_task_id}")

    @app.task(
        base=DataForgeTask, bind=True, name="wt.extender", lock_ttl=1.0, lock_auto_renew=False
    )
    def extender(self: DataForgeTask, scheduled_task_id: int | None = None) -> int:
        mark("extender", scheduled_task_id)
        deadline = time.monotonic() + 20
        extended = 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                self.extend_lock()
            except LockLost:
                task_log("lock lost after", extended, "extensions")
                raise
            extended += 1
        return extended

    @app.task(base=DataForgeTask, bind=True, name="wt.aio")
    async def aio(self: DataForgeTask, scheduled_task_id: int | None = None) -> dict:
        mark("aio", scheduled_task_id)
        task_log("async start", self.request.id)

        async def child() -> str:
            task_log("from a spawned task")
            return "child"

        spawned = await asyncio.create_task(child())
        await asyncio.to_thread(task_log, "from a worker thread")
        return {"spawned": spawned}

    @app.task(base=DataForgeTask, bind=True, name="wt.hard_limit", time_limit=1)
    def hard_limit(self: DataForgeTask, scheduled_task_id: int | None = None) -> None:
        mark("hard_limit", scheduled_task_id)
        task_log("about to overrun")
        try:
            time.sleep(30)
        except SoftTimeLimitExceeded:
            task_log("ignoring the soft limit")  # so the hard limit has to stop it
            time.sleep(30)

    @app.task(name="wt.plain")
    def plain(marker: str) -> str:
        runtime.backend.client.incr(f"{prefix}:body:plain:{marker}")
        return marker


def __getattr__(name: str) -> Any:
    # `celery -A` reads `app` from the module: build it from this process's environment,
    # once (a test process never touches it, it calls build_app with its own mapping).
    if name == "app":
        built = build_app(os.environ)
        globals()["app"] = built
        return built
    raise AttributeError(name)
