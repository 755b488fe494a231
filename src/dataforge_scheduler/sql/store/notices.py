"""Schedule-change notices from PostgreSQL itself: ``LISTEN`` on the channel the trigger
on ``scheduled_tasks`` notifies (``sql.models.CHANGES_CHANNEL``), so a beat sees a change
made by anyone, raw SQL included, at once. SQLite has no such thing: ``None``.

The listener holds a connection of its own, outside the engine's pool (a listening
connection must stay open and idle in autocommit), and implements the ``NoticeListener``
port: ``wait(0)`` looks without blocking.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine

from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.sql.models import CHANGES_CHANNEL

__all__ = ["DatabaseChangeListener", "listen_for_changes"]

logger = logging.getLogger(__name__)


def listen_for_changes(engine: Engine) -> DatabaseChangeListener | None:
    """A listener on ``engine``'s database, or None when it cannot notify (SQLite)."""
    if engine.dialect.name != "postgresql":
        return None
    return DatabaseChangeListener(engine)


class DatabaseChangeListener:
    """``LISTEN`` on one dedicated connection (see the module docstring)."""

    _connection: Any = None  # until connected: __del__ may run after a failed __init__

    def __init__(self, engine: Engine) -> None:
        # the driver's own error class (psycopg is imported by the dialect, not here)
        self._error: type[Exception] = engine.dialect.loaded_dbapi.Error
        args, params = engine.dialect.create_connect_args(engine.url)
        try:
            connection: Any = engine.dialect.connect(*args, **params)
            connection.autocommit = True
            connection.execute(f"LISTEN {CHANGES_CHANNEL}")
        except self._error as exc:
            raise BackendUnavailable(
                f"the database is unavailable to listen for schedule changes: {exc}",
                backend="database",
            ) from exc
        self._connection: Any = connection

    def wait(self, timeout: float) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            got = any(True for _ in connection.notifies(timeout=max(0.0, timeout), stop_after=1))
            if got:  # consume the rest: a burst wakes the waiter once
                for _ in connection.notifies(timeout=0.0):
                    pass
        except self._error as exc:
            raise BackendUnavailable(
                f"the database stopped delivering schedule changes: {exc}", backend="database"
            ) from exc
        return got

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except self._error:  # a broken connection may fail to close; nothing to keep
                logger.debug("closing the change listener failed", exc_info=True)

    def __del__(self) -> None:
        # a scheduler dropped without close() must not leak its connection
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
