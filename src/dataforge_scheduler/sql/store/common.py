"""What the store's modules share: the transaction and its error boundary, listing
errors, dialect inserts and JSON-safe values.

**The boundary.** Every store call runs inside ``transaction()`` (``Runtime.session()``
is that), which commits on success, rolls back on error, and turns whatever SQLAlchemy
raises into the library's own errors (``database_error``): an outage (connection refused,
dropped, timed out, a deadlock) is ``BackendUnavailable``, a broken constraint
``ConflictError``, a missing table ``ConfigurationError`` telling to run ``init-db``, and
anything else ``DatabaseError``, each with the driver's error as its ``__cause__``. A
host therefore needs to catch only ``DataForgeError``. ``Session`` and ``ClaimFilter``
are re-exported so the faces can name the types without importing SQLAlchemy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from dataforge_scheduler.core.jsonable import capped_json, clean_text, json_safe
from dataforge_scheduler.core.timing import aware_utc
from dataforge_scheduler.errors import (
    BackendUnavailable,
    ConfigurationError,
    ConflictError,
    DatabaseError,
    DataForgeError,
    InvalidParams,
)

__all__ = [
    "ClaimFilter",
    "Engine",
    "Session",
    "SessionFactory",
    "aware_now",
    "capped_json",
    "clean_text",
    "database_error",
    "dialect_insert",
    "invalid_param",
    "is_unique_violation",
    "json_safe",
    "transaction",
]

logger = logging.getLogger(__name__)

#: An extra condition on the ``scheduled_tasks`` rows a scheduler claims (a SQLAlchemy
#: expression on ``ScheduledTask``), or None for every row.
ClaimFilter: TypeAlias = ColumnElement[bool] | None
#: What ``Runtime.session_factory`` is: sessions bound to the runtime's engine.
SessionFactory: TypeAlias = sessionmaker[Session]


_PG_UNIQUE_VIOLATION = "23505"
_PG_UNDEFINED = frozenset({"42P01", "42703"})  # undefined table, undefined column
_OUTAGES = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_error(exc: sa_exc.SQLAlchemyError) -> DataForgeError:
    """The library's error for what SQLAlchemy raised (see the module docstring)."""
    reason = _first_line(exc)
    if isinstance(exc, _OUTAGES) and "no such " not in reason:
        return BackendUnavailable(f"the database is unavailable: {reason}", backend="database")
    if isinstance(exc, sa_exc.IntegrityError):
        return ConflictError(f"the database refused the change: {reason}")
    orig = getattr(exc, "orig", None)
    missing = getattr(orig, "sqlstate", None) in _PG_UNDEFINED or any(
        marker in reason for marker in ("no such table", "no such column")
    )
    if missing:
        return ConfigurationError(
            f"the database lacks the library's schema ({reason}): run "
            "`dataforge-scheduler migrate` (or `init-db`)"
        )
    return DatabaseError(f"the database refused a statement: {reason}")


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in a transaction: committed on success, rolled back on error, every
    SQLAlchemy error turned into the library's own (``database_error``)."""
    try:
        with factory.begin() as session:
            yield session
    except DataForgeError:
        raise
    except sa_exc.SQLAlchemyError as exc:
        raise database_error(exc) from exc


def invalid_param(field: str, value: Any, *, message: str) -> InvalidParams:
    """An ``InvalidParams`` for a listing parameter, in the API's error-list shape."""
    return InvalidParams(
        message,
        field=field,
        value=value,
        errors=[{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )


def dialect_insert(session: Session) -> Callable[..., Any]:
    """The ``insert`` of the session's dialect, the one with ``on_conflict_do_*``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise ConfigurationError(
        f"database dialect {name!r} is not supported (use PostgreSQL or SQLite)",
        field="database_url",
    )


def is_unique_violation(exc: sa_exc.IntegrityError) -> bool:
    """Whether the database refused a row because a unique key was taken."""
    if getattr(exc.orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION:
        return True
    return "UNIQUE constraint failed" in str(exc.orig)


def aware_now(now: datetime) -> datetime:
    """``now`` as aware UTC, by the one naive-datetime rule (``core.timing``)."""
    return aware_utc(now, field="now")
