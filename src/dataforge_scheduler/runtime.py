"""Runtime: the bundle every face shares (settings, database, backend roles, registry,
dispatcher).

A ``Runtime`` is built once by ``setup()`` and bound to its Celery app. Nothing here
connects at construction: the engine, the backend (Redis or in-process, chosen by
``backends.open_backend``) and the roles on top of it are made on first use, in the
process that uses them. After a fork (Celery's prefork pool) the engine disposes its
inherited pool (``sql.engine``) and redis-py's pool resets itself on a PID change, so a
child never shares its parent's sockets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.backends import open_backend
from dataforge_scheduler.core.clock import Clock, SystemClock
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.registry import registry as default_registry
from dataforge_scheduler.settings import Settings, mask_url

if TYPE_CHECKING:
    from dataforge_scheduler.core.ports import (
        AsyncLogFeed,
        Backend,
        ChangeNotices,
        Dispatcher,
        LockManager,
        LogBus,
    )
    from dataforge_scheduler.sql.store import Engine, Session, SessionFactory

__all__ = ["Runtime", "bind_runtime", "runtime_for"]

logger = logging.getLogger(__name__)

_APP_ATTRIBUTE = "_dataforge_runtime"


class Runtime:
    """What the parts share. Built by ``setup()``; cheap to construct, lazy to connect."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: TaskRegistry | None = None,
        clock: Clock | None = None,
        engine: Engine | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else default_registry
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.dispatcher: Dispatcher | None = dispatcher
        self._lock = threading.RLock()
        self._engine = engine
        self._session_factory: SessionFactory | None = None
        self._backend: Backend | None = None

    def __repr__(self) -> str:
        database = mask_url(self.settings.database_url)
        return f"<Runtime database={database} redis={mask_url(self.settings.effective_redis_url)}>"

    # ------------------------------------------------------------ database

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine for ``settings.database_url`` (made on first use)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from dataforge_scheduler.sql.engine import create_engine

                    self._engine = create_engine(self.settings.database_url)
        return self._engine

    @property
    def session_factory(self) -> SessionFactory:
        if self._session_factory is None:
            with self._lock:
                if self._session_factory is None:
                    from dataforge_scheduler.sql.engine import make_session_factory

                    self._session_factory = make_session_factory(self.engine)
        return self._session_factory

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error, and
        every database error raised as the library's own (``BackendUnavailable`` for an
        outage; see ``sql.store``)."""
        from dataforge_scheduler.sql.store import transaction

        with transaction(self.session_factory) as session:
            yield session

    # ------------------------------------------------------------ backend roles

    @property
    def backend(self) -> Backend:
        """The roles behind the ports for ``settings.redis_url`` (made on first use)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = open_backend(self.settings, clock=self.clock)
        return self._backend

    @property
    def locks(self) -> LockManager:
        return self.backend.locks

    @property
    def logbus(self) -> LogBus:
        return self.backend.logbus

    @property
    def notices(self) -> ChangeNotices:
        return self.backend.notices

    @property
    def log_feed(self) -> AsyncLogFeed:
        """The non-blocking live-log feed (the API's SSE streams)."""
        return self.backend.log_feed

    # ------------------------------------------------------------ health and lifecycle

    def check(self) -> dict[str, str]:
        """Reachability of the database and the backend: ``{"database": "ok" | error,
        "redis": "ok" | "ok (in-process)" | error}``."""
        from dataforge_scheduler.sql.store import ping

        report: dict[str, str] = {}
        try:
            ping(self.engine)
            report["database"] = "ok"
        except BackendUnavailable as exc:
            report["database"] = str(exc)
        try:
            report["redis"] = self.backend.check()
        except BackendUnavailable as exc:
            report["redis"] = f"unreachable: {exc}"
        return report

    def close(self) -> None:
        """Dispose the engine and close the backend's connections; safe to call twice."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            if self._backend is not None:
                self._backend.close()


def bind_runtime(app: Any, runtime: Runtime) -> None:
    """Attach ``runtime`` to a Celery app (``setup()`` does this)."""
    setattr(app, _APP_ATTRIBUTE, runtime)


def runtime_for(app: Any) -> Runtime:
    """The runtime ``setup()`` bound to ``app``; ConfigurationError when there is none."""
    runtime = getattr(app, _APP_ATTRIBUTE, None)
    if not isinstance(runtime, Runtime):
        name = getattr(app, "main", None) or repr(app)
        raise ConfigurationError(
            f"dataforge_scheduler.setup() has not been called for Celery app {name!r}; "
            "call it where the app is created, before tasks run"
        )
    return runtime
