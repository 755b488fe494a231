"""Engines and sessions: PostgreSQL and SQLite set up right, and safe across ``fork()``.

Celery's prefork pool forks worker children from a parent that may already hold pooled
connections. A child that reused its parent's socket would interleave two processes'
traffic on one connection, so, as SQLAlchemy's "Using Connection Pools with
Multiprocessing or os.fork()" advises, every engine made here gets a fresh pool in the
child (``dispose(close=False)``: the parent's connections are dropped, never closed, so
the parent keeps them). SQLite connections get foreign keys, WAL and a busy timeout,
and SQLAlchemy, not the sqlite3 module, emits BEGIN so SAVEPOINTs work.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = ["create_engine", "make_session_factory"]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_fork_hook_lock = threading.Lock()
_fork_hook_registered = False


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the library's connection settings, renewed after fork.

    PostgreSQL gets ``pool_pre_ping``; SQLite gets ``check_same_thread=False``, foreign
    keys, WAL (file databases) and a busy timeout on every connection, and an in-memory
    database one shared connection (``StaticPool``). ``kwargs`` go to SQLAlchemy's
    ``create_engine`` and win over these defaults.
    """
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        engine = _create_sqlite_engine(sa_url, kwargs)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(sa_url, **kwargs)
    _renew_after_fork(engine)
    return engine


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in {"", ":memory:"} or url.query.get("mode") == "memory"


def _create_sqlite_engine(url: URL, kwargs: dict[str, Any]) -> Engine:
    memory = _is_memory(url)
    connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
    if memory:
        # one connection for every thread: each new connection would see an empty database
        kwargs.setdefault("poolclass", StaticPool)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3's legacy mode never BEGINs before SELECT or SAVEPOINT; take that job over
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def _renew_after_fork(engine: Engine) -> None:
    global _fork_hook_registered
    if _is_memory(engine.url) and engine.dialect.name == "sqlite":
        # the child's copy of an in-memory database lives in that one connection
        return
    _engines.add(engine)
    with _fork_hook_lock:
        if not _fork_hook_registered:
            os.register_at_fork(after_in_child=_dispose_pools_in_child)
            _fork_hook_registered = True


def _dispose_pools_in_child() -> None:
    for engine in list(_engines):
        # close=False: those sockets belong to the parent, which goes on using them
        engine.dispose(close=False)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)
