"""Where the plugin's tests keep their data: settings, databases and Redis keys.

By default a test gets a throwaway SQLite file and the in-process lock and log store
(``memory://``); nothing outside the test's ``tmp_path`` is touched. With
``DATAFORGE_TEST_DATABASE_URL`` set, each test session on PostgreSQL gets its own
database (``dataforge_plugin_<hex>``, created at first use and dropped at the end of the
session, ``WITH (FORCE)``), and the library's tables are emptied after every test; any
other dialect is used as given and emptied after every test. With
``DATAFORGE_TEST_REDIS_URL`` set, each test gets its own ``key_prefix`` and its keys are
deleted after the test. The Celery broker is always the in-process ``memory://``
transport, consumed by the plugin's in-process worker, and the result backend is
always ``cache+memory://``: the library keeps run history in SQL, not in Celery
results, and Celery 5.7's Redis result backend calls redis-py's deprecated ``setex``,
whose ``DeprecationWarning`` fails test suites that turn warnings into errors.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dataforge_scheduler.backends import MEMORY_URL
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store

__all__ = [
    "DATABASE_ENV",
    "MEMORY_URL",
    "REDIS_ENV",
    "SESSION_ID",
    "build_test_settings",
    "isolated_database",
    "purge_backend",
    "truncate_tables",
    "unique_key_prefix",
]


DATABASE_ENV = "DATAFORGE_TEST_DATABASE_URL"
REDIS_ENV = "DATAFORGE_TEST_REDIS_URL"
#: Names this test session's databases and Redis keys.
SESSION_ID = uuid.uuid4().hex[:10]


def env_url(name: str) -> str | None:
    """The URL in environment variable ``name``, or None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def unique_key_prefix() -> str:
    """A Redis key prefix unique to one test: ``dftest-<session>-<hex>``."""
    return f"dftest-{SESSION_ID}-{uuid.uuid4().hex[:8]}"


def build_test_settings(
    *,
    database_url: str,
    redis_url: str,
    overrides: Mapping[str, Any] | None = None,
    settings_class: type[Settings] = Settings,
) -> Settings:
    """Settings for one test: the given database and Redis, the in-process broker.

    Result backend ``cache+memory://``; ``celery_timezone`` UTC; a unique
    ``key_prefix`` when ``redis_url`` is a real Redis. ``overrides``
    win over all of these. As with any ``Settings``, ``DATAFORGE_*`` variables still
    fill the fields that are not passed.
    """
    memory = redis_url.startswith(MEMORY_URL)
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "celery_broker_url": MEMORY_URL,
        "celery_result_backend": "cache+memory://",
        "celery_timezone": "UTC",
        "key_prefix": "dataforge" if memory else unique_key_prefix(),
    }
    values.update(overrides or {})
    return settings_class(**values)


@contextmanager
def isolated_database(url: str) -> Iterator[str]:
    """A PostgreSQL database made for this session from ``url`` (dropped after), or
    ``url`` itself for any other dialect."""
    with store.isolated_database(url, name=f"dataforge_plugin_{SESSION_ID}") as isolated:
        yield isolated


def truncate_tables(runtime: Runtime) -> None:
    """Empty the library's tables (and only those), restarting their identities."""
    store.truncate_tables(runtime.engine)


def purge_backend(runtime: Runtime) -> int:
    """Delete what the runtime's backend stored under its key prefix (every Redis key
    of the test, or the in-process locks and logs)."""
    return runtime.backend.purge()
