"""setup() and Runtime: binding, settings applied to Celery, laziness, backend choice."""

from __future__ import annotations

import pickle
import socket

import pytest
from celery import Celery

from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": "sqlite://",
        "redis_url": "memory://",
        "celery_broker_url": "memory://",
        "celery_result_backend": "cache+memory://",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_setup_binds_a_runtime_to_the_app() -> None:
    app = Celery("wiring-test")
    runtime = setup(app, _settings(), registry=TaskRegistry())
    assert runtime_for(app) is runtime
    assert runtime.settings.redis_url == "memory://"


def test_setup_applies_settings_to_celery_conf() -> None:
    app = Celery("wiring-test")
    setup(
        app,
        _settings(celery_timezone="Asia/Shanghai", celery_worker_prefetch_multiplier=1),
        registry=TaskRegistry(),
    )
    assert app.conf.timezone == "Asia/Shanghai"
    assert app.conf.enable_utc is True
    assert app.conf.broker_transport_options["visibility_timeout"] == 36000
    assert app.conf.task_time_limit == 14400
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.dataforge_task_max_retries == 3


def test_runtime_for_an_app_without_setup_says_what_to_do() -> None:
    app = Celery("never-set-up")
    with pytest.raises(ConfigurationError, match=r"setup\(\) has not been called"):
        runtime_for(app)


def test_setup_rejects_something_that_is_not_a_celery_app() -> None:
    with pytest.raises(ConfigurationError, match="needs a Celery application"):
        setup(object(), _settings())


def test_setup_applies_the_task_name_prefix_to_the_registry() -> None:
    registry = TaskRegistry()
    registry.register("other.task", name="Other")
    app = Celery("wiring-test")
    with pytest.raises(Exception, match="dataforge\\."):
        setup(app, _settings(task_name_prefix="dataforge."), registry=registry)


def test_runtime_connects_nothing_until_used() -> None:
    port = _free_port()  # nothing listens here
    runtime = Runtime(
        _settings(
            database_url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing",
            redis_url=f"redis://127.0.0.1:{port}/0",
        ),
        registry=TaskRegistry(),
    )
    # construction and repr do no I/O; the health check reports both backends down
    assert "127.0.0.1" in repr(runtime)
    report = runtime.check()
    assert report["database"] != "ok"
    assert report["redis"].startswith("unreachable")
    runtime.close()
    runtime.close()  # idempotent


def test_memory_url_selects_in_process_roles() -> None:
    from dataforge_scheduler.memory.locks import MemoryLockManager
    from dataforge_scheduler.memory.logbus import MemoryLogBus
    from dataforge_scheduler.memory.notices import MemoryChangeNotices

    runtime = Runtime(_settings(), registry=TaskRegistry())
    assert isinstance(runtime.locks, MemoryLockManager)
    assert isinstance(runtime.logbus, MemoryLogBus)
    assert isinstance(runtime.notices, MemoryChangeNotices)
    assert runtime.check()["redis"] == "ok (in-process)"
    assert runtime.backend.name == "memory"
    assert runtime.locks.get("task:1") is None


def test_sqlite_session_commits_and_rolls_back() -> None:
    import sqlalchemy as sa

    runtime = Runtime(_settings(database_url="sqlite://"), registry=TaskRegistry())
    with runtime.session() as session:
        session.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        session.execute(sa.text("INSERT INTO t VALUES (1)"))

    def failing_transaction() -> None:
        with runtime.session() as session:
            session.execute(sa.text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_transaction()
    with runtime.session() as session:
        assert session.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
    assert runtime.check()["database"] == "ok"


def test_configuration_error_pickles_with_its_details() -> None:
    err = ConfigurationError("bad field", field="celery_timezone")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is ConfigurationError
    assert str(clone) == "bad field"
    assert clone.field == "celery_timezone"
