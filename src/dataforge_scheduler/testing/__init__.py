"""The opt-in pytest plugin: fixtures for host applications' tests.

Enable it in the host's top-level ``conftest.py`` with
``pytest_plugins = ["dataforge_scheduler.testing"]`` (nothing loads it automatically,
as with ``celery.contrib.pytest``). Every fixture is named ``dataforge_*``. The
configuration fixtures (``dataforge_database_url``, ``dataforge_redis_url``,
``dataforge_settings_overrides``, ``dataforge_settings``, ``dataforge_celery_app``,
``dataforge_worker_parameters``, ``dataforge_clock``) are the ones a host overrides in
its own conftest; the others build on them: a runtime with tables created and emptied
after each test, a schedule factory, a task runner on an in-process worker, a scheduler
on a manual clock and a synchronous API client. Importing this module does no I/O and
needs only pytest; the API client needs httpx. ``docs/testing.md`` shows each fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.testing.factory import ScheduleFactory
from dataforge_scheduler.testing.runner import RunTimeout, TaskRunner
from dataforge_scheduler.testing.scheduler import RecordingDispatcher, SchedulerDriver, SentTask
from dataforge_scheduler.testing.services import (
    DATABASE_ENV,
    REDIS_ENV,
    build_test_settings,
    env_url,
    isolated_database,
    purge_backend,
    truncate_tables,
)
from dataforge_scheduler.testing.worker import InProcessWorker, WorkerPool

__all__ = [
    "DATABASE_ENV",
    "REDIS_ENV",
    "InProcessWorker",
    "RecordingDispatcher",
    "RunTimeout",
    "ScheduleFactory",
    "SchedulerDriver",
    "SentTask",
    "TaskRunner",
    "build_test_settings",
]

API_KEY = "test-key"


# ---------------------------------------------------------------- configuration


@pytest.fixture(scope="session")
def _dataforge_session_database() -> Iterator[str | None]:
    url = env_url(DATABASE_ENV)
    if url is None:
        yield None
        return
    with isolated_database(url) as isolated:
        yield isolated


@pytest.fixture
def dataforge_database_url(tmp_path: Path, _dataforge_session_database: str | None) -> str:
    """A throwaway SQLite file under ``tmp_path``, or this session's database made from
    ``DATAFORGE_TEST_DATABASE_URL`` (the library's tables are emptied after each test)."""
    if _dataforge_session_database is not None:
        return _dataforge_session_database
    return f"sqlite:///{tmp_path / 'dataforge.db'}"


@pytest.fixture
def dataforge_redis_url() -> str:
    """``memory://`` (in-process locks and logs), or ``DATAFORGE_TEST_REDIS_URL``."""
    return env_url(REDIS_ENV) or "memory://"


@pytest.fixture
def dataforge_settings_overrides() -> dict[str, Any]:
    """Settings fields that win over the test defaults; override to change them."""
    return {}


@pytest.fixture
def dataforge_settings(
    dataforge_database_url: str,
    dataforge_redis_url: str,
    dataforge_settings_overrides: dict[str, Any],
) -> Settings:
    """The test ``Settings``: in-process broker, UTC, the URLs above, then the overrides."""
    return build_test_settings(
        database_url=dataforge_database_url,
        redis_url=dataforge_redis_url,
        overrides=dataforge_settings_overrides,
    )


@pytest.fixture(scope="session")
def dataforge_celery_app() -> Any:
    """A fresh ``Celery("dataforge-test")`` for the session; override to return yours."""
    from celery import Celery

    return Celery("dataforge-test", set_as_current=False)


@pytest.fixture
def dataforge_worker_parameters() -> dict[str, Any]:
    """Keyword arguments for the in-process worker (``pool``, ``concurrency``,
    ``queues``...); default ``{"pool": "threads", "concurrency": 2}``."""
    return {}


@pytest.fixture
def dataforge_clock() -> ManualClock:
    """The scheduler's clock: now, to the second; it moves only when told to."""
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


# ---------------------------------------------------------------- runtime and worker


@pytest.fixture
def dataforge_runtime(dataforge_celery_app: Any, dataforge_settings: Settings) -> Iterator[Runtime]:
    """``setup(dataforge_celery_app, dataforge_settings)`` with the tables created;
    emptied (and the test's Redis keys deleted) and disposed after the test."""
    from dataforge_scheduler.sql.models import create_all
    from dataforge_scheduler.wiring import setup

    app = dataforge_celery_app
    runtime = setup(app, dataforge_settings)
    _tune_app(app)
    create_all(runtime.engine)
    try:
        yield runtime
    finally:
        _clean_up(runtime)


def _tune_app(app: Any) -> None:
    transport = dict(app.conf.broker_transport_options or {})
    transport["polling_interval"] = 0.01  # memory:// is polled; the default is 1 s
    app.conf.broker_transport_options = transport


def _clean_up(runtime: Runtime) -> None:
    try:
        truncate_tables(runtime)
        purge_backend(runtime)
    finally:
        runtime.close()


@pytest.fixture(scope="session")
def _dataforge_workers() -> Iterator[WorkerPool]:
    workers = WorkerPool()
    try:
        yield workers
    finally:
        workers.close()


@pytest.fixture
def dataforge_worker(
    dataforge_runtime: Runtime,
    dataforge_celery_app: Any,
    dataforge_worker_parameters: dict[str, Any],
    _dataforge_workers: WorkerPool,
) -> InProcessWorker:
    """A real Celery worker consuming the app's queues in this process (session-long)."""
    return _dataforge_workers.worker_for(dataforge_celery_app, dataforge_worker_parameters)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def dataforge_schedule_factory(
    dataforge_runtime: Runtime, dataforge_clock: ManualClock
) -> ScheduleFactory:
    """``make(task_name=..., task_type="interval", **fields) -> ScheduledTask``."""
    return ScheduleFactory(dataforge_runtime, clock=dataforge_clock)


@pytest.fixture
def dataforge_run_task(
    dataforge_runtime: Runtime, dataforge_celery_app: Any, dataforge_worker: InProcessWorker
) -> TaskRunner:
    """``run(schedule_or_task_name, **kwargs) -> TaskExecution`` on the worker."""
    return TaskRunner(dataforge_celery_app, dataforge_runtime)


@pytest.fixture
def dataforge_scheduler(
    dataforge_runtime: Runtime, dataforge_celery_app: Any, dataforge_clock: ManualClock
) -> Iterator[SchedulerDriver]:
    """The ``DatabaseScheduler`` on ``dataforge_clock``, recording what it sends."""
    driver = SchedulerDriver(dataforge_celery_app, dataforge_runtime, dataforge_clock)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def dataforge_api_client(
    dataforge_runtime: Runtime, dataforge_worker: InProcessWorker
) -> Iterator[Any]:
    """A sync ``httpx.Client`` on ``create_app(runtime, api_keys=["test-key"])``,
    sending the key; paths are relative to ``/api/v1``."""
    from dataforge_scheduler.api import create_app
    from dataforge_scheduler.testing.client import make_client

    client = make_client(
        create_app(dataforge_runtime, api_keys=[API_KEY], min_key_length=1), api_key=API_KEY
    )
    with client:
        yield client
