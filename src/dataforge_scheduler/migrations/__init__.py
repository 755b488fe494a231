"""Alembic migrations of the library's tables, shipped inside the package.

The revisions in ``versions/`` sit on their own branch, labelled ``dataforge``, so they
work two ways. Standalone, ``dataforge-scheduler migrate`` (or :func:`upgrade`) runs them
through this package's ``env.py`` and records them in their own version table,
``dataforge_alembic_version``, which never collides with a host's ``alembic_version``.
Inside a host's Alembic environment, adding :data:`VERSIONS_RESOURCE` (or
:func:`version_location`) to its ``version_locations`` makes them one more branch of the
host's history (``alembic upgrade heads``). Alembic is the optional extra
``migrations``; importing this module does not import it, and every function that needs
it raises ``ConfigurationError`` naming the extra when it is missing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from dataforge_scheduler.errors import ConfigurationError, ConflictError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "BRANCH_LABEL",
    "VERSIONS_RESOURCE",
    "VERSION_TABLE",
    "alembic_config",
    "compare_options",
    "current_revisions",
    "downgrade",
    "head_revision",
    "include_name",
    "schema_diff",
    "script_location",
    "stamp",
    "upgrade",
    "upgrade_from",
    "version_location",
]

#: the branch label every revision of the library carries (``alembic upgrade dataforge@head``)
BRANCH_LABEL = "dataforge"
#: the version table of standalone runs; a host's own environment uses its own table
VERSION_TABLE = "dataforge_alembic_version"
#: ``version_locations`` entry as a package resource, independent of the install path
VERSIONS_RESOURCE = "dataforge_scheduler.migrations:versions"
INSTALL_HINT = 'pip install "dataforge-scheduler[migrations]"'

# pg_advisory_xact_lock key: two deploy steps migrating at once take turns
_ADVISORY_LOCK_KEY = zlib.crc32(b"dataforge_scheduler.migrations")

Target = str | URL | Engine


def script_location() -> str:
    """The directory holding ``env.py``, ``script.py.mako`` and ``versions/``."""
    return str(Path(__file__).resolve().parent)


def version_location() -> str:
    """The directory of the library's revisions, for a host's ``version_locations``."""
    return str(Path(__file__).resolve().parent / "versions")


def _require_alembic() -> None:
    try:
        import alembic  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"database migrations need Alembic, which is not installed: {INSTALL_HINT} "
            "(or create the tables without migrations: dataforge-scheduler init-db)",
            field="alembic",
        ) from exc


def alembic_config(
    database_url: Target | None = None,
    *,
    version_table: str = VERSION_TABLE,
    connection: Connection | None = None,
    output: TextIO | None = None,
) -> Config:
    """An Alembic ``Config`` for the library's own environment, built in code.

    ``database_url`` (or its engine's URL) is what offline runs render SQL for;
    ``connection`` is what online runs migrate. Library maintainers write a new revision
    with ``alembic.command.revision(alembic_config(url), "message", autogenerate=True)``.
    """
    _require_alembic()
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", script_location())
    # the URL travels as an attribute: a password with "%" would break ini interpolation
    if database_url is not None:
        config.attributes["url"] = (
            database_url.url if isinstance(database_url, Engine) else database_url
        )
    config.attributes["version_table"] = version_table
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _connection(database_url: Target) -> Iterator[Connection]:
    """A connection in one transaction (DDL is transactional on PostgreSQL)."""
    from dataforge_scheduler.sql.engine import create_engine

    engine = database_url if isinstance(database_url, Engine) else create_engine(database_url)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        if engine is not database_url:
            engine.dispose()


def _serialize(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
        )


def _current(connection: Connection, version_table: str) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": version_table})
    return tuple(context.get_current_heads())


def _refuse_unrecorded_tables(connection: Connection) -> None:
    from dataforge_scheduler.sql.models import metadata

    existing = set(sa.inspect(connection).get_table_names()) & set(metadata.tables)
    if existing:
        raise ConflictError(
            f"tables {', '.join(sorted(existing))} already exist but {VERSION_TABLE} records "
            "no migration (they were made by init-db or create_all): if they are this "
            "version's schema, record that with `dataforge-scheduler migrate --stamp`, then "
            "upgrade as usual",
            field="database_url",
        )


def upgrade(
    database_url: Target,
    revision: str = "head",
    *,
    sql: bool = False,
    output: TextIO | None = None,
) -> tuple[str, ...]:
    """Upgrade the library's tables to ``revision``; returns the revisions now current.

    Online, it runs in one transaction under a PostgreSQL advisory lock, so deploy steps
    that migrate at the same time take turns, and it refuses a database whose tables
    exist without a recorded revision (see :func:`stamp`). With ``sql=True`` nothing
    connects: the SQL is written to ``output`` (stdout by default) and ``()`` returned.
    """
    _require_alembic()
    from alembic import command

    if sql:
        command.upgrade(alembic_config(database_url, output=output), revision, sql=True)
        return ()
    return upgrade_from(database_url, revision)[1]


def upgrade_from(
    database_url: Target, revision: str = "head"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """:func:`upgrade` online, returning ``(before, after)``: the revisions current before
    it ran (read under the lock, so a concurrent run is never mistaken for this one's
    work) and after."""
    _require_alembic()
    from alembic import command

    with _connection(database_url) as connection:
        _serialize(connection)
        before = _current(connection, VERSION_TABLE)
        if not before:
            _refuse_unrecorded_tables(connection)
        command.upgrade(alembic_config(database_url, connection=connection), revision)
        return before, _current(connection, VERSION_TABLE)


def downgrade(
    database_url: Target,
    revision: str = "base",
    *,
    sql: bool = False,
    output: TextIO | None = None,
) -> tuple[str, ...]:
    """Downgrade the library's tables to ``revision`` (``base`` drops them all)."""
    _require_alembic()
    from alembic import command

    if sql:
        command.downgrade(alembic_config(database_url, output=output), revision, sql=True)
        return ()
    with _connection(database_url) as connection:
        _serialize(connection)
        command.downgrade(alembic_config(database_url, connection=connection), revision)
        return _current(connection, VERSION_TABLE)


def stamp(database_url: Target, revision: str = "head") -> tuple[str, ...]:
    """Record ``revision`` as current without running it (tables made by ``init-db``).

    Refuses when ``revision`` is the head and the tables differ from this version's
    ``metadata`` (:func:`schema_diff`): stamping a schema that is not the head's would
    make later migrations fail halfway.
    """
    _require_alembic()
    from alembic import command

    with _connection(database_url) as connection:
        _serialize(connection)
        if revision in {"head", f"{BRANCH_LABEL}@head", head_revision()}:
            diff = _diff(connection)
            if diff:
                raise ConflictError(
                    f"cannot stamp {revision}: the tables differ from this version's schema "
                    f"in {len(diff)} place(s), first {diff[0]!r}",
                    field="revision",
                )
        command.stamp(alembic_config(database_url, connection=connection), revision)
        return _current(connection, VERSION_TABLE)


def current_revisions(database_url: Target) -> tuple[str, ...]:
    """The library's revisions recorded in ``dataforge_alembic_version`` (``()``: none)."""
    _require_alembic()
    with _connection(database_url) as connection:
        return _current(connection, VERSION_TABLE)


def head_revision() -> str:
    """The newest revision this version of the library ships."""
    _require_alembic()
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise ConfigurationError("no migration revision found", field="script_location")
    return head


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: of the tables, only the library's are compared.

    A host's tables and the version table share the database and are not the library's,
    so autogenerate must neither drop nor copy them.
    """
    from dataforge_scheduler.sql.models import metadata

    return type_ != "table" or name in metadata.tables


def compare_options(dialect_name: str) -> dict[str, Any]:
    """The options autogenerate compares with: types, server defaults, the library's tables.

    Server defaults go through Alembic's own comparison, except on SQLite, where
    :func:`_sqlite_server_default` first settles two known reflection gaps. (The hook is
    not used on other databases: Alembic 1.20 crashes calling a ``compare_server_default``
    callable for a column PostgreSQL reflects as an identity.)
    """
    return {
        "compare_type": True,
        "compare_server_default": _sqlite_server_default if dialect_name == "sqlite" else True,
        "include_name": include_name,
    }


def _sqlite_server_default(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic ``compare_server_default`` hook for SQLite: two reflection gaps, nothing else.

    An ``Identity()`` primary key reflects with no default (SQLite has no identity
    columns; ``INTEGER PRIMARY KEY`` is the rowid), and Alembic's SQLite comparison never
    strips the quotes of an empty string literal (``''``). Both are reported as equal;
    every other case returns ``None``, so Alembic's own comparison decides.
    """
    if isinstance(metadata_default, sa.Identity) and inspected_default is None:
        return False
    # reflected as "('')" (Alembic parenthesises it), rendered from metadata as "" or "''"
    if inspected_default in {"''", "('')"} and rendered_metadata_default in {"", "''"}:
        return False
    return None


def _diff(connection: Connection) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from dataforge_scheduler.sql.models import metadata

    opts = compare_options(connection.dialect.name)
    context = MigrationContext.configure(connection, opts=opts)
    return list(compare_metadata(context, metadata))


def schema_diff(database_url: Target) -> list[Any]:
    """What Alembic's autogenerate would change to make the tables match ``metadata``.

    Only the library's tables are compared, with types and server defaults; an empty
    list means the database holds exactly this version's schema.
    """
    _require_alembic()
    with _connection(database_url) as connection:
        return _diff(connection)
