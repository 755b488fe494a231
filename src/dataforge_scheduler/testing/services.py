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

import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dataforge_scheduler.settings import Settings

__all__ = [
    "DATABASE_ENV",
    "MEMORY_URL",
    "REDIS_ENV",
    "SESSION_ID",
    "build_test_settings",
    "delete_redis_keys",
    "isolated_database",
    "truncate_tables",
    "unique_key_prefix",
]

logger = logging.getLogger(__name__)

DATABASE_ENV = "DATAFORGE_TEST_DATABASE_URL"
REDIS_ENV = "DATAFORGE_TEST_REDIS_URL"
MEMORY_URL = "memory://"
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
    import sqlalchemy as sa

    admin_url = sa.engine.make_url(url)
    if admin_url.get_backend_name() != "postgresql":
        yield url
        return
    name = f"dataforge_plugin_{SESSION_ID}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception:
        admin.dispose()
        raise
    logger.debug("created test database %s", name)
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def truncate_tables(engine: Any) -> None:
    """Empty the library's tables (and only those), restarting their identities."""
    import sqlalchemy as sa

    from dataforge_scheduler.sql.models import metadata

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


def delete_redis_keys(url: str, pattern: str) -> int:
    """Delete every key of the Redis at ``url`` matching ``pattern`` (SCAN, not KEYS)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=pattern, count=500))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()
