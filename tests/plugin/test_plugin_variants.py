"""The plugin on its own fresh Celery app, and against real PostgreSQL and Redis.

The first host project keeps the default ``dataforge_celery_app`` and defines its tasks
with ``shared_task``. The second runs the full host suite of ``test_plugin_host`` with
``DATAFORGE_TEST_DATABASE_URL`` and ``DATAFORGE_TEST_REDIS_URL`` set (to this run's
PostgreSQL database and Redis), then checks that the session's database was dropped
and that no key of the session's prefixes is left in Redis.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from tests.plugin.conftest import PYTEST_INI, outcome_report
from tests.plugin.test_plugin_host import HOST_TESTS

pytestmark = pytest.mark.slow

SHARED_TASKS = """
from celery import shared_task

from dataforge_scheduler import DataForgeTask, register_task, task_log


@register_task(name="ping", description="answers pong", category="demo", params=[])
@shared_task(base=DataForgeTask, name="shared.ping", bind=True)
def ping(self, scheduled_task_id=None, **kwargs):
    task_log("pong from", self.app.main)
    return "pong"
"""

DEFAULT_APP_TESTS = """
from dataforge_scheduler import ExecutionStatus, runtime_for


def test_the_default_app_is_fresh_and_set_up(dataforge_celery_app, dataforge_runtime):
    assert dataforge_celery_app.main == "dataforge-test"
    assert runtime_for(dataforge_celery_app) is dataforge_runtime
    assert dataforge_runtime.backend.name == "memory"


def test_a_shared_task_runs_on_it(dataforge_run_task, dataforge_schedule_factory):
    schedule = dataforge_schedule_factory.make(task_name="shared.ping", task_type="manual")
    row = dataforge_run_task(schedule)
    assert row.status is ExecutionStatus.SUCCESS
    assert row.result == "pong"
    assert row.log_output == "pong from dataforge-test"
"""

RECORD_SERVICES = """
import json


def test_record_what_the_session_used(dataforge_runtime, request):
    settings = dataforge_runtime.settings
    assert settings.database_url.startswith("postgresql")
    assert dataforge_runtime.backend.name == "redis"
    with dataforge_runtime.session() as session:
        from sqlalchemy import text
        database = session.execute(text("SELECT current_database()")).scalar_one()
    record = {"database": database, "key_prefix": settings.key_prefix}
    (request.config.rootpath / "services.json").write_text(json.dumps(record))
"""


def test_the_default_app_runs_shared_tasks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(sharedtasks=textwrap.dedent(SHARED_TASKS))
    pytester.makeconftest(
        'import sharedtasks  # noqa: F401\n\npytest_plugins = ["dataforge_scheduler.testing"]\n'
    )
    pytester.makeini(textwrap.dedent(PYTEST_INI))
    pytester.makepyfile(test_default=textwrap.dedent(DEFAULT_APP_TESTS))
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=2)


def test_the_plugin_on_real_postgresql_and_redis(
    host_project: pytest.Pytester,
    pg_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATAFORGE_TEST_DATABASE_URL", pg_url)
    monkeypatch.setenv("DATAFORGE_TEST_REDIS_URL", redis_url)
    host_project.makepyfile(
        test_host=textwrap.dedent(HOST_TESTS), test_record=textwrap.dedent(RECORD_SERVICES)
    )
    result = host_project.runpytest_subprocess("-q")
    result.assert_outcomes(passed=17)  # the host tests plus the recorder
    used: dict[str, Any] = json.loads((host_project.path / "services.json").read_text())
    assert used["database"].startswith("dataforge_plugin_"), used

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                {"name": used["database"]},
            ).scalar_one()
    finally:
        engine.dispose()
    assert left == 0, outcome_report(result)

    session_prefix = used["key_prefix"].rsplit("-", 1)[0]  # dftest-<session>
    client = redis.Redis.from_url(redis_url)
    try:
        leftover = list(client.scan_iter(match=f"{session_prefix}*", count=500))
    finally:
        client.close()
    assert leftover == []
