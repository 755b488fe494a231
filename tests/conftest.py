"""Service fixtures shared by every test layer.

Each test run gets its own PostgreSQL database (``dataforge_test_<hex>``, dropped at the
end) and its own Redis key prefix (``dftest-<hex>``, its keys deleted at the end), so runs
never see each other's rows or keys. URLs come from ``DATAFORGE_TEST_DATABASE_URL`` and
``DATAFORGE_TEST_REDIS_URL``. A test that needs an unreachable service skips locally and
**fails** under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
RUN_ID = uuid.uuid4().hex[:10]
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# fixture name -> marker it implies, so `-m "not postgres"` selects correctly
_FIXTURE_MARKERS = {
    "pg_url": "postgres",
    "pg_engine": "postgres",
    "redis_url": "redis",
    "redis_client": "redis",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in names:
                item.add_marker(getattr(pytest.mark, marker))
        if "engine" in names and "postgres" in item.nodeid:
            item.add_marker(pytest.mark.postgres)


def service_unavailable(service: str, url: str, exc: BaseException) -> None:
    """Skip locally, fail under CI: a missing service must never turn CI green."""
    message = f"{service} at {url} is unreachable: {exc!r}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: services are required)", pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return os.environ.get("DATAFORGE_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """URL of a database created for this test run and dropped after it."""
    import sqlalchemy as sa

    # pre-ping: the outage tests restart PostgreSQL under this pooled connection
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"dataforge_test_{RUN_ID}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        service_unavailable("PostgreSQL", pg_admin_url, exc)
    url = sa.engine.make_url(pg_admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Any]:
    """An engine on the run's database with the library's tables created."""
    from dataforge_scheduler.sql.engine import create_engine
    from dataforge_scheduler.sql.models import create_all

    engine = create_engine(pg_url)
    create_all(engine)
    yield engine
    engine.dispose()


def _truncate(engine: Any) -> None:
    import sqlalchemy as sa

    from dataforge_scheduler.sql.models import metadata

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture
def pg(pg_engine: Any) -> Iterator[Any]:
    """The PostgreSQL engine, emptied after the test."""
    yield pg_engine
    _truncate(pg_engine)


# ---------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_engine(tmp_path: Any) -> Iterator[Any]:
    """A file SQLite database with the library's tables created."""
    from dataforge_scheduler.sql.engine import create_engine
    from dataforge_scheduler.sql.models import create_all

    engine = create_engine(f"sqlite:///{tmp_path / 'dataforge.db'}")
    create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Any:
    """The same test on PostgreSQL and on SQLite."""
    if request.param == "postgres":
        return request.getfixturevalue("pg")
    return request.getfixturevalue("sqlite_engine")


# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("DATAFORGE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        service_unavailable("Redis", url, exc)
    finally:
        client.close()
    return url


@pytest.fixture
def key_prefix() -> str:
    """A Redis key namespace unique to this test."""
    return f"dftest-{RUN_ID}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str) -> Iterator[Any]:
    """A client on the test Redis; every key under ``key_prefix`` is deleted afterwards."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(match=f"{key_prefix}:*", count=500))
    if keys:
        client.delete(*keys)
    client.close()
