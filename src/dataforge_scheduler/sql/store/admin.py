"""Database-level statements: is the database there, does it hold the library's tables,
and the throwaway databases and emptying that test suites need.

``ping`` and ``missing_tables`` serve health checks and ``dataforge-scheduler check``;
``isolated_database`` and ``truncate_tables`` serve the pytest plugin (and this
project's own tests). Errors come out as the library's (``common.database_error``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.sql.models import metadata
from dataforge_scheduler.sql.store.common import database_error

__all__ = ["database_label", "isolated_database", "missing_tables", "ping", "truncate_tables"]

logger = logging.getLogger(__name__)


def ping(engine: Engine) -> None:
    """Run ``SELECT 1``; ``BackendUnavailable`` when the database cannot answer."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        where = engine.url.render_as_string(hide_password=True)
        # the caller decides what to log (the health probe rate-limits it)
        logger.debug("database at %s is unreachable: %s", where, exc)
        raise BackendUnavailable(
            f"the database at {where} is unreachable: {exc}", url=where, backend="database"
        ) from exc


def missing_tables(engine: Engine) -> list[str]:
    """The library's tables that do not exist in the database, sorted."""
    try:
        present = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise database_error(exc) from exc
    return sorted(set(metadata.tables) - present)


def truncate_tables(engine: Engine) -> None:
    """Empty the library's tables (and only those), restarting their identities."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


@contextmanager
def isolated_database(url: str, *, name: str) -> Iterator[str]:
    """A PostgreSQL database called ``name``, made on the server of ``url`` and dropped
    (``WITH (FORCE)``) afterwards; for any other dialect, ``url`` itself."""
    admin_url = sa.engine.make_url(url)
    if admin_url.get_backend_name() != "postgresql":
        yield url
        return
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


def database_label(url: str | Any) -> str:
    """``url`` as shown to operators, password hidden."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)
