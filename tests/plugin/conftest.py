"""The plugin's tests build small host projects with ``pytester`` and run pytest on them.

``host_project`` writes what a host application has: ``hostapp.py`` (its own Celery app,
``setup()`` called at import as in DESIGN.md, registered DataForgeTasks that log, fail
and extend their lock), a ``conftest.py`` enabling the plugin and returning that app
from ``dataforge_celery_app``, and a strict ``pytest.ini`` (warnings are errors). Each
generated session runs in a subprocess (``runpytest_subprocess``): Celery signals, the
task registry and the ``memory://`` broker are process-wide, so an in-process run would
share them with this test session.
"""

from __future__ import annotations

import textwrap

import pytest

HOST_APP = '''
"""A host application as DESIGN.md shows one: its Celery app, setup() and its tasks."""

from celery import Celery

import dataforge_scheduler as dfs
from dataforge_scheduler import DataForgeTask, register_task, task_log

celery_app = Celery("hostapp")
# production settings: the plugin's setup() replaces them in tests (no I/O happens here)
runtime = dfs.setup(
    celery_app,
    dfs.Settings(
        database_url="postgresql+psycopg://app@db.invalid/app",
        celery_broker_url="redis://redis.invalid:6379/0",
        celery_timezone="Asia/Shanghai",
    ),
)


@register_task(
    name="账号同步",
    description="刷新过期的登录会话",
    category="sync",
    params=[{"name": "count", "type": "int", "default": 1}],
)
@celery_app.task(base=DataForgeTask, name="hostapp.sync", bind=True)
def sync_accounts(self, scheduled_task_id=None, count=1, **kwargs):
    task_log("开始同步账号...", count)
    self.extend_lock()
    task_log("done")
    return {"synced_count": count}


@register_task(name="boom", description="always fails", category="sync", params=[])
@celery_app.task(base=DataForgeTask, name="hostapp.boom")
def boom(scheduled_task_id=None, **kwargs):
    task_log("about to fail")
    raise RuntimeError("kaput")
'''

HOST_CONFTEST = """
import pytest

pytest_plugins = ["dataforge_scheduler.testing"]


@pytest.fixture(scope="session")
def dataforge_celery_app():
    from hostapp import celery_app

    return celery_app
"""

PYTEST_INI = """
[pytest]
addopts = -p no:cacheprovider
filterwarnings =
    error
    ignore::DeprecationWarning:kombu.*
"""


@pytest.fixture
def host_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A host project using the plugin with its own Celery app."""
    pytester.makepyfile(hostapp=textwrap.dedent(HOST_APP))
    pytester.makeconftest(textwrap.dedent(HOST_CONFTEST))
    pytester.makeini(textwrap.dedent(PYTEST_INI))
    pytester.syspathinsert()
    return pytester


def outcome_report(result: pytest.RunResult) -> str:
    """The generated session's output, to show when an outcome assertion fails."""
    return "\n".join(result.outlines[-80:] + result.errlines[-40:])
