"""A Celery app for real ``celery beat`` and ``celery worker`` processes in the beat tests.

``celery -A tests.integration.apps.beat_app beat|worker`` reads ``app``, built on first
access from the environment ``procs.service_env`` made (database, Redis, key prefix,
broker key prefix). Its recording tasks (``bt.record`` and the seed's
``dataforge.sync_accounts``) are plain Celery tasks that push what they received (task
id, kwargs, dataforge headers) as JSON onto ``<key_prefix>:received``, so a test sees
exactly which messages a scheduler sent. ``CrashingScheduler`` SIGKILLs its own beat
process after its first claim committed and before it sends: the crash the
"claimed but never sent" sweep exists for.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping, Sequence
from signal import SIGKILL
from typing import Any

import redis
from celery import Celery, Task

from dataforge_scheduler.celery.beat import ClaimedSlot, DatabaseScheduler
from dataforge_scheduler.celery.headers import EXECUTION_ID, SLOT, TRIGGER, header
from dataforge_scheduler.core.messages import RunMessage, message_for
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup

__all__ = ["CrashingScheduler", "build_app", "received", "received_key"]

RECORDING_TASKS = ("bt.record", "dataforge.sync_accounts")


def received_key(key_prefix: str) -> str:
    return f"{key_prefix}:received"


def received(client: redis.Redis, key_prefix: str) -> list[dict[str, Any]]:
    """Every message the recording tasks ran, in arrival order."""
    return [json.loads(item) for item in client.lrange(received_key(key_prefix), 0, -1)]


def build_app(env: Mapping[str, str]) -> Celery:
    """The test app configured from ``env`` (the mapping ``service_env`` returns)."""
    settings = Settings.from_env(
        database_url=env["DATAFORGE_DATABASE_URL"],
        redis_url=env["DATAFORGE_REDIS_URL"],
        celery_broker_url=env["DATAFORGE_CELERY_BROKER_URL"],
        celery_result_backend=env["DATAFORGE_CELERY_RESULT_BACKEND"],
        key_prefix=env["DATAFORGE_KEY_PREFIX"],
    )
    app = Celery("beat_app")
    runtime = setup(app, settings, registry=TaskRegistry())
    broker_prefix = env["DATAFORGE_TEST_BROKER_PREFIX"]
    app.conf.broker_transport_options["global_keyprefix"] = broker_prefix
    app.conf.result_backend_transport_options = {
        **(app.conf.result_backend_transport_options or {}),
        "global_keyprefix": broker_prefix,
    }
    app.conf.task_ignore_result = True
    key = received_key(settings.key_prefix)

    def record(self: Task, **kwargs: Any) -> None:
        entry = {
            "task": self.name,
            "id": self.request.id,
            "kwargs": kwargs,
            "headers": {name: header(self.request, name) for name in (TRIGGER, SLOT, EXECUTION_ID)},
        }
        runtime.backend.client.rpush(key, json.dumps(entry))

    for name in RECORDING_TASKS:
        app.task(bind=True, name=name, shared=False)(record)
    return app


class _KillOnSend:
    """A dispatcher that SIGKILLs its own process instead of publishing."""

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        return message_for(run)

    def dispatch(self, run: ClaimedSlot) -> RunMessage:
        os.kill(os.getpid(), signal.SIGKILL)
        return message_for(run)  # pragma: no cover - the process is gone

    def cancel(self, celery_task_ids: Sequence[str], *, signal: str = "SIGTERM") -> None:
        os.kill(os.getpid(), SIGKILL)


class CrashingScheduler(DatabaseScheduler):
    """Dies by SIGKILL between its first committed claim and its send.

    It never sweeps (its lease is an hour): it would die re-sending the slot an earlier
    crash stranded, and each crash must strand a claim of its own."""

    resend_after_seconds = 3600.0

    def __init__(self, app: Any, **kwargs: Any) -> None:
        kwargs.setdefault("dispatcher", _KillOnSend())
        super().__init__(app, **kwargs)


def __getattr__(name: str) -> Any:
    # `celery -A` reads `app`: build it from this process's environment, once. A test
    # process never touches it.
    if name == "app":
        built = build_app(os.environ)
        globals()["app"] = built
        return built
    raise AttributeError(name)
