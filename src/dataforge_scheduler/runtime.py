"""Runtime: the bundle every face shares (settings, database, Redis roles, registry).

A ``Runtime`` is built once by ``setup()`` and bound to its Celery app. Nothing here
connects at construction: the engine, the Redis client and the roles on top of them are
made on first use, in the process that uses them. After a fork (Celery's prefork pool)
the engine disposes its inherited pool (``sql.engine``) and redis-py's pool resets itself
on a PID change, so a child never shares its parent's sockets.

``redis_url = "memory://"`` selects the in-process twins of the Redis roles (the demo and
host-app fixtures); they pass the same contract tests as the Redis ones.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from dataforge_scheduler.core.clock import Clock, SystemClock
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.registry import registry as default_registry
from dataforge_scheduler.settings import Settings

if TYPE_CHECKING:
    import redis as redis_py
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from dataforge_scheduler.core.ports import ChangeNotices, LockManager, LogBus

__all__ = ["Dispatcher", "Runtime", "bind_runtime", "runtime_for"]

logger = logging.getLogger(__name__)

_APP_ATTRIBUTE = "_dataforge_runtime"
MEMORY_URL = "memory://"


class Dispatcher(Protocol):
    """Sends a run to the workers by registered task name (the Celery face implements it).

    The API's "run now" goes through this port, so ``api/`` never imports Celery.
    """

    def send(
        self,
        task_name: str,
        *,
        kwargs: dict[str, Any],
        task_id: str,
        options: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish one run; raise ``BackendUnavailable`` when the broker cannot be reached."""
        ...


class Runtime:
    """What the parts share. Built by ``setup()``; cheap to construct, lazy to connect."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: TaskRegistry | None = None,
        clock: Clock | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else default_registry
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.dispatcher: Dispatcher | None = None
        self._lock = threading.RLock()
        self._engine = engine
        self._session_factory: sessionmaker[Session] | None = None
        self._redis: redis_py.Redis | None = None
        self._redis_pid: int | None = None
        self._locks: LockManager | None = None
        self._logbus: LogBus | None = None
        self._notices: ChangeNotices | None = None

    def __repr__(self) -> str:
        return f"<Runtime database={self._database_label()} redis={self._redis_label()}>"

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
    def session_factory(self) -> sessionmaker[Session]:
        if self._session_factory is None:
            with self._lock:
                if self._session_factory is None:
                    from dataforge_scheduler.sql.engine import make_session_factory

                    self._session_factory = make_session_factory(self.engine)
        return self._session_factory

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.session_factory.begin() as session:
            yield session

    # ------------------------------------------------------------ Redis roles

    @property
    def uses_memory_backend(self) -> bool:
        """True when locks, logs and notices live in this process (``redis_url=memory://``)."""
        return self.settings.effective_redis_url.startswith(MEMORY_URL)

    @property
    def redis(self) -> redis_py.Redis:
        """The redis-py client for locks, logs and notices (made on first use)."""
        if self.uses_memory_backend:
            raise ConfigurationError(
                "redis_url is memory://: there is no Redis client in this runtime",
                field="redis_url",
            )
        if self._redis is None or self._redis_pid != os.getpid():
            with self._lock:
                if self._redis is None or self._redis_pid != os.getpid():
                    import redis as redis_py

                    self._redis = redis_py.Redis.from_url(
                        self.settings.effective_redis_url,
                        health_check_interval=30,
                        socket_connect_timeout=5,
                    )
                    self._redis_pid = os.getpid()
        return self._redis

    @property
    def locks(self) -> LockManager:
        if self._locks is None:
            with self._lock:
                if self._locks is None:
                    self._locks = self._build_locks()
        return self._locks

    @property
    def logbus(self) -> LogBus:
        if self._logbus is None:
            with self._lock:
                if self._logbus is None:
                    self._logbus = self._build_logbus()
        return self._logbus

    @property
    def notices(self) -> ChangeNotices:
        if self._notices is None:
            with self._lock:
                if self._notices is None:
                    self._notices = self._build_notices()
        return self._notices

    def _build_locks(self) -> LockManager:
        if self.uses_memory_backend:
            from dataforge_scheduler.memory.locks import MemoryLockManager

            return MemoryLockManager(clock=self.clock)
        from dataforge_scheduler.redis.keys import Keys
        from dataforge_scheduler.redis.locks import RedisLockManager

        return RedisLockManager(self.redis, Keys(self.settings.key_prefix), clock=self.clock)

    def _build_logbus(self) -> LogBus:
        if self.uses_memory_backend:
            from dataforge_scheduler.memory.logbus import MemoryLogBus

            return MemoryLogBus(clock=self.clock)
        from dataforge_scheduler.redis.keys import Keys
        from dataforge_scheduler.redis.logbus import RedisLogBus

        return RedisLogBus(self.redis, Keys(self.settings.key_prefix))

    def _build_notices(self) -> ChangeNotices:
        if self.uses_memory_backend:
            from dataforge_scheduler.memory.notices import MemoryChangeNotices

            return MemoryChangeNotices()
        from dataforge_scheduler.redis.keys import Keys
        from dataforge_scheduler.redis.notices import RedisChangeNotices

        return RedisChangeNotices(self.redis, Keys(self.settings.key_prefix))

    # ------------------------------------------------------------ health and lifecycle

    def check(self) -> dict[str, str]:
        """Reachability of the database and Redis: ``{"database": "ok" | error, ...}``."""
        from dataforge_scheduler.sql.engine import ping

        report: dict[str, str] = {}
        try:
            ping(self.engine)
            report["database"] = "ok"
        except BackendUnavailable as exc:
            report["database"] = str(exc)
        if self.uses_memory_backend:
            report["redis"] = "ok (in-process)"
        else:
            try:
                self.redis.ping()
                report["redis"] = "ok"
            except Exception as exc:  # redis-py raises several unrelated types here
                report["redis"] = f"unreachable: {exc}"
        return report

    def close(self) -> None:
        """Dispose the engine and close the Redis client; safe to call twice."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            if self._redis is not None:
                self._redis.close()
                self._redis = None

    def _database_label(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.settings.database_url).render_as_string(hide_password=True)

    def _redis_label(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.settings.effective_redis_url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


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
