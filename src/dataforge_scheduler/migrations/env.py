"""Alembic's environment for the library's own, standalone migration runs.

``dataforge-scheduler migrate`` and the functions of :mod:`dataforge_scheduler.migrations`
run it; a host's Alembic environment never does (it keeps its own ``env.py`` and finds
the library's revisions through ``version_locations``). Online, it migrates the
connection the caller put in ``config.attributes["connection"]`` (or one it opens on
``config.attributes["url"]``); offline (``--sql``), it renders SQL for that URL. Versions
go to their own table (``dataforge_alembic_version``), and autogenerate compares types
and server defaults and only the library's tables. Alembic executes this file; importing
it anywhere else does nothing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.migrations import VERSION_TABLE, compare_options
from dataforge_scheduler.sql.models import metadata


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": metadata,
        "version_table": context.config.attributes.get("version_table", VERSION_TABLE),
        **compare_options(dialect_name),
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead
        "render_as_batch": dialect_name == "sqlite",
    }


def _url() -> str | sa.URL:
    url: str | sa.URL | None = context.config.attributes.get("url")
    url = url or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise ConfigurationError(
            "no database URL for the migrations: pass one to dataforge_scheduler.migrations",
            field="database_url",
        )
    return url


def run_offline() -> None:
    url = sa.make_url(_url())
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection: sa.Connection | None = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = sa.create_engine(_url(), poolclass=sa.NullPool)
    try:
        with engine.begin() as own:
            _migrate(own)
    finally:
        engine.dispose()


def _migrate(connection: sa.Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


# ``context.config`` exists only while Alembic runs this file
if hasattr(context, "config"):
    if context.is_offline_mode():
        run_offline()
    else:
        run_online()
