"""The tables' own rules (CHECKs, unique slot, ON DELETE SET NULL, types) on both
dialects, and the engine settings those rules rely on (SQLite pragmas, fork safety)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger, TaskType
from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.sql.engine import create_engine, make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution, create_all, metadata
from dataforge_scheduler.sql.store import ping

SLOT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def session(engine: Any) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session


def _schedule(session: Session, name: str = "nightly") -> ScheduledTask:
    row = ScheduledTask(name=name, task_type=TaskType.MANUAL, task_name="app.task")
    session.add(row)
    session.flush()
    return row


def _execution(
    session: Session, celery_id: str, schedule_id: int | None, slot: datetime | None
) -> TaskExecution:
    row = TaskExecution(
        scheduled_task_id=schedule_id,
        scheduled_for=slot,
        task_name="app.task",
        celery_task_id=celery_id,
        trigger=ExecutionTrigger.SCHEDULE,
    )
    session.add(row)
    session.flush()
    return row


@pytest.mark.parametrize(
    ("column", "value"),
    [("task_type", "hourly"), ("status", "sleeping"), ("misfire_policy", "later")],
)
def test_check_constraints_refuse_unknown_words(engine: Any, column: str, value: str) -> None:
    values = {"name": "x", "task_type": "manual", "task_name": "t", column: value}
    names = ", ".join(values)
    params = ", ".join(f":{key}" for key in values)
    with pytest.raises(IntegrityError, match=f"ck_scheduled_tasks_{column}"), engine.begin() as c:
        c.execute(sa.text(f"INSERT INTO scheduled_tasks ({names}) VALUES ({params})"), values)


def test_check_constraint_refuses_a_zero_interval(engine: Any) -> None:
    statement = sa.text(
        "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds) "
        "VALUES ('x', 'interval', 't', 0)"
    )
    with pytest.raises(IntegrityError, match="interval_positive"), engine.begin() as c:
        c.execute(statement)


def test_check_constraint_refuses_an_unknown_execution_trigger(engine: Any) -> None:
    statement = sa.text(
        'INSERT INTO task_executions (task_name, celery_task_id, "trigger") '
        "VALUES ('t', 'c1', 'cosmic-ray')"
    )
    with pytest.raises(IntegrityError, match="ck_task_executions_trigger"), engine.begin() as c:
        c.execute(statement)


def test_the_orm_refuses_an_unknown_enum_value_before_the_database(session: Session) -> None:
    session.add(ScheduledTask(name="x", task_type="hourly", task_name="t"))
    with pytest.raises(StatementError, match="'hourly' is not a valid TaskType"):
        session.flush()


def test_a_slot_is_claimed_once_but_null_slots_never_conflict(session: Session) -> None:
    schedule = _schedule(session)
    _execution(session, "c1", schedule.id, SLOT)
    _execution(session, "c2", schedule.id, None)
    _execution(session, "c3", schedule.id, None)
    _execution(session, "c4", None, SLOT)
    _execution(session, "c5", None, SLOT)
    session.commit()

    with pytest.raises(IntegrityError, match=r"scheduled_for|uq_task_executions"):
        _execution(session, "c6", schedule.id, SLOT)


def test_celery_task_id_is_unique(session: Session) -> None:
    _execution(session, "same", None, None)
    with pytest.raises(IntegrityError, match="celery_task_id"):
        _execution(session, "same", None, None)


def test_deleting_a_schedule_keeps_its_history(session: Session) -> None:
    schedule = _schedule(session)
    run = _execution(session, "c1", schedule.id, SLOT)
    session.commit()

    session.delete(schedule)
    session.commit()
    session.expire_all()

    kept = session.get(TaskExecution, run.id)
    assert kept is not None
    assert kept.scheduled_task_id is None
    assert kept.task_name == "app.task"
    assert kept.scheduled_for == SLOT


def test_aware_datetimes_round_trip_as_utc(session: Session) -> None:
    shanghai = timezone(timedelta(hours=8))
    local = datetime(2030, 6, 1, 9, 30, 15, 123456, tzinfo=shanghai)
    schedule = ScheduledTask(
        name="d", task_type=TaskType.DATE, task_name="t", run_at=local, end_at=local
    )
    session.add(schedule)
    session.commit()
    session.expire_all()

    loaded = session.get(ScheduledTask, schedule.id)
    assert loaded is not None
    assert loaded.run_at == local
    assert loaded.run_at is not None
    assert loaded.run_at.tzinfo is UTC
    assert loaded.run_at.hour == 1
    assert loaded.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(session: Session) -> None:
    naive = datetime(2030, 6, 1, 9, 30)  # noqa: DTZ001 - the point of the test
    session.add(ScheduledTask(name="d", task_type=TaskType.DATE, task_name="t", run_at=naive))
    with pytest.raises(StatementError, match="datetime must be timezone-aware, got naive"):
        session.flush()


def test_json_round_trips_and_none_result_is_sql_null(session: Session) -> None:
    schedule = ScheduledTask(
        name="j", task_type="manual", task_name="t", handler_kwargs={"ids": [1, 2], "名": "值"}
    )
    session.add(schedule)
    run = _execution(session, "c1", None, None)
    session.commit()
    session.expire_all()

    assert session.get(ScheduledTask, schedule.id).handler_kwargs == {"ids": [1, 2], "名": "值"}  # type: ignore[union-attr]
    null_results = session.scalar(
        sa.select(sa.func.count()).where(TaskExecution.id == run.id, TaskExecution.result.is_(None))
    )
    assert null_results == 1


def test_defaults_and_enum_members_come_back(session: Session) -> None:
    run = _execution(session, "c1", None, None)
    session.commit()
    assert run.status is ExecutionStatus.PENDING
    assert run.kwargs == {}
    assert run.retries == 0
    assert run.created_at.tzinfo is UTC
    assert "c1" in repr(run)
    assert "nightly" in repr(_schedule(session))


def test_postgres_stores_json_as_jsonb_with_stable_names(pg: Any) -> None:
    inspector = sa.inspect(pg)
    columns = {c["name"]: c["type"] for c in inspector.get_columns("scheduled_tasks")}
    assert isinstance(columns["handler_kwargs"], JSONB)
    executions = {c["name"]: c["type"] for c in inspector.get_columns("task_executions")}
    assert isinstance(executions["result"], JSONB)
    assert isinstance(executions["kwargs"], JSONB)
    indexes = {ix["name"] for ix in inspector.get_indexes("scheduled_tasks")}
    assert {"ix_scheduled_tasks_due", "ix_scheduled_tasks_task_name"} <= indexes
    uniques = {uq["name"] for uq in inspector.get_unique_constraints("task_executions")}
    assert "uq_task_executions_scheduled_task_id_scheduled_for" in uniques
    foreign = inspector.get_foreign_keys("task_executions")[0]
    assert foreign["options"]["ondelete"] == "SET NULL"


def test_create_all_is_idempotent(engine: Any) -> None:
    create_all(engine)
    create_all(engine)
    assert set(sa.inspect(engine).get_table_names()) >= set(metadata.tables)


# The engine settings the tables rely on. These would sit in a test_engine module; the
# assignment gave this room four test files.


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(sqlite_engine: Any) -> None:
    with sqlite_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_sqlite_savepoints_roll_back_inside_the_transaction(sqlite_engine: Any) -> None:
    with make_session_factory(sqlite_engine)() as session:
        _schedule(session, "kept")
        with pytest.raises(IntegrityError), session.begin_nested():
            _schedule(session, "kept")
        session.commit()
        assert session.scalar(sa.select(sa.func.count()).select_from(ScheduledTask)) == 1


def test_in_memory_sqlite_shares_one_connection() -> None:
    engine = create_engine("sqlite://")
    try:
        assert isinstance(engine.pool, StaticPool)
        create_all(engine)
        with make_session_factory(engine)() as session:
            _schedule(session)
            session.commit()
        with engine.connect() as connection:
            count = connection.execute(sa.select(sa.func.count()).select_from(ScheduledTask))
            assert count.scalar() == 1
    finally:
        engine.dispose()


def test_ping_raises_backend_unavailable_when_the_database_is_down() -> None:
    engine = create_engine(
        "postgresql+psycopg://nobody:secret@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    try:
        with pytest.raises(BackendUnavailable, match="unreachable") as caught:
            ping(engine)
        assert "secret" not in str(caught.value)
        assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    finally:
        engine.dispose()


def test_ping_passes_on_a_live_database(engine: Any) -> None:
    ping(engine)
    assert engine.pool.checkedout() == 0  # the connection went back to the pool


def test_a_forked_child_never_reuses_the_parents_connections(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as connection:
            parent_pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                with engine.connect() as connection:
                    pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                os.write(write, json.dumps({"pid": pid}).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            report = json.loads(pipe.read() or "{}")
        os.waitpid(child, 0)
        assert report.get("pid") not in (None, parent_pid)
        with engine.connect() as connection:  # the parent's pooled connection still works
            again = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        assert again == parent_pid
    finally:
        engine.dispose()
