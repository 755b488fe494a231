"""Enable the dataforge-scheduler pytest plugin on this service's Celery app.

Two overrides are all it takes: ``dataforge_celery_app`` returns the service's own app
(with its task modules imported, as the worker imports them), and
``dataforge_settings`` builds the service's ``AppSettings`` (the plugin's test values:
a throwaway SQLite file, in-process broker, locks and logs) so task code reading
``settings_for(app)`` gets them.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from celery import Celery

from app.config import AppSettings

pytest_plugins = ["dataforge_scheduler.testing"]

#: Small, so a run of a few accounts shows several batches in its log.
TEST_BATCH_SIZE = 2


@pytest.fixture(scope="session")
def dataforge_celery_app() -> Celery:
    from app.celery_app import celery_app

    celery_app.loader.import_default_modules()  # the include= modules
    return celery_app


@pytest.fixture
def dataforge_settings(
    dataforge_database_url: str,
    dataforge_redis_url: str,
    dataforge_settings_overrides: dict[str, Any],
) -> AppSettings:
    # imported here: a module-level import of the plugin's package, before pytest_plugins
    # loads it, stops pytest rewriting its asserts (PytestAssertRewriteWarning)
    from dataforge_scheduler.testing import build_test_settings

    settings = build_test_settings(
        database_url=dataforge_database_url,
        redis_url=dataforge_redis_url,
        overrides={
            "sync_batch_size": TEST_BATCH_SIZE,
            "task_name_prefix": "dataforge.",
            **dataforge_settings_overrides,
        },
        settings_class=AppSettings,
    )
    return cast(AppSettings, settings)
