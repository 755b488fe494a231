"""A runtime used before a fork keeps working in the parent and in the child.

Celery's prefork pool forks after the app (and often its engine) exists; a child that
reused the parent's pooled sockets would corrupt both sides' connections.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings


@pytest.mark.postgres
def test_engine_survives_fork(pg_url: str) -> None:
    runtime = Runtime(Settings(database_url=pg_url, redis_url="memory://"), registry=TaskRegistry())
    with runtime.session() as session:
        parent_pid_in_db = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            with runtime.session() as session:
                backend = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            code = 0 if backend != parent_pid_in_db else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child reused the parent's connection"

    with runtime.session() as session:
        assert session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == parent_pid_in_db
    runtime.close()
