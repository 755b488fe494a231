"""Schedule store functions on PostgreSQL and SQLite: validation, next_run_at, locking
rules, conflicts that leave the session usable, listing, pause/resume and delete."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import TaskStatus, TaskType
from dataforge_scheduler.errors import (
    ConflictError,
    InvalidParams,
    InvalidSchedule,
    ScheduleNotFound,
)
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TZ = "UTC"


@pytest.fixture
def session(engine: Any) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session


def _create(session: Session, name: str = "hourly", **fields: Any) -> ScheduledTask:
    values: dict[str, Any] = {
        "name": name,
        "task_type": "interval",
        "task_name": "app.sync",
        "interval_seconds": 3600,
    }
    values.update(fields)
    return store.create_schedule(session, values, now=NOW, default_timezone=TZ)


# ---------------------------------------------------------------- create


def test_create_interval_fires_one_interval_after_creation(session: Session) -> None:
    row = _create(session, handler_kwargs={"batch": 10})
    session.commit()

    assert row.id is not None
    assert row.created_at == NOW
    assert row.next_run_at == NOW + timedelta(hours=1)
    assert row.version == 1
    assert row.status is TaskStatus.ACTIVE
    assert row.handler_kwargs == {"batch": 10}
    assert row.run_count == 0
    assert row.is_system is False


def test_create_cron_uses_the_schedule_timezone_then_the_default(session: Session) -> None:
    shanghai = _create(
        session, "nine", task_type="cron", cron_expression="0 9 * * *", timezone="Asia/Shanghai"
    )
    default = store.create_schedule(
        session,
        {"name": "d", "task_type": "cron", "task_name": "t", "cron_expression": "0 9 * * *"},
        now=NOW,
        default_timezone="Europe/London",
    )
    # 12:00 UTC is 20:00 in Shanghai: the next 09:00 there is 01:00 UTC tomorrow
    assert shanghai.next_run_at == datetime(2030, 1, 2, 1, 0, tzinfo=UTC)
    assert default.next_run_at == datetime(2030, 1, 2, 9, 0, tzinfo=UTC)


def test_create_date_manual_and_paused(session: Session) -> None:
    later = NOW + timedelta(days=3)
    one_shot = _create(session, "once", task_type="date", run_at=later)
    manual = _create(session, "by-hand", task_type="manual")
    paused = _create(session, "resting", status="paused")

    assert one_shot.next_run_at == later
    assert manual.next_run_at is None
    assert paused.next_run_at is None
    assert paused.status is TaskStatus.PAUSED


def test_a_date_schedule_in_the_past_is_refused(session: Session) -> None:
    with pytest.raises(InvalidSchedule, match="not in the future") as caught:
        _create(session, "late", task_type="date", run_at=NOW - timedelta(seconds=1))
    assert caught.value.field == "run_at"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"next_run_at": NOW}, "next_run_at"),
        ({"task_type": "hourly"}, "task_type"),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": "60"}, "interval_seconds"),
        ({"interval_seconds": None}, "interval_seconds"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"task_type": "cron", "cron_expression": "every tuesday"}, "cron_expression"),
        ({"task_type": "cron"}, "cron_expression"),
        ({"task_type": "date"}, "run_at"),
        ({"start_at": datetime(2030, 1, 1)}, "start_at"),  # noqa: DTZ001 - naive on purpose
        ({"start_at": NOW, "end_at": NOW - timedelta(hours=1)}, "end_at"),
        ({"handler_kwargs": ["not", "a", "dict"]}, "handler_kwargs"),
        ({"handler_kwargs": {"when": object()}}, "handler_kwargs"),
        ({"name": "x" * 201}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"task_name": None}, "task_name"),
        ({"is_system": "yes"}, "is_system"),
        ({"priority": 256}, "priority"),
        ({"misfire_policy": "whenever"}, "misfire_policy"),
        ({"description": None}, "description"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(
    session: Session, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        _create(session, **fields)
    assert caught.value.field == field
    assert field in str(caught.value) or "cron expression" in str(caught.value)
    assert session.scalar(sa.select(sa.func.count()).select_from(ScheduledTask)) == 0


def test_a_missing_required_field_is_named(session: Session) -> None:
    with pytest.raises(InvalidSchedule, match="task_name is required") as caught:
        store.create_schedule(
            session, {"name": "x", "task_type": "manual"}, now=NOW, default_timezone=TZ
        )
    assert caught.value.field == "task_name"


def test_a_duplicate_name_conflicts_and_leaves_the_session_usable(session: Session) -> None:
    _create(session, "taken")
    with pytest.raises(ConflictError, match="'taken' already exists") as caught:
        _create(session, "taken")
    assert caught.value.field == "name"

    _create(session, "other")
    session.commit()
    names = set(session.scalars(sa.select(ScheduledTask.name)))
    assert names == {"taken", "other"}


def test_a_naive_now_is_a_caller_bug(session: Session) -> None:
    with pytest.raises(ValueError, match="aware"):
        store.create_schedule(
            session,
            {"name": "x", "task_type": "manual", "task_name": "t"},
            now=datetime(2030, 1, 1),  # noqa: DTZ001 - naive on purpose
            default_timezone=TZ,
        )


# ---------------------------------------------------------------- read


def test_get_by_id_and_name_and_not_found(session: Session) -> None:
    row = _create(session)
    session.commit()
    assert store.get_schedule(session, row.id) is row
    assert store.get_schedule(session, row.id, for_update=True) is row
    assert store.get_schedule_by_name(session, "hourly") is row
    with pytest.raises(ScheduleNotFound, match="no schedule with id 999"):
        store.get_schedule(session, 999)
    with pytest.raises(ScheduleNotFound, match="'nope'"):
        store.get_schedule_by_name(session, "nope")


def test_get_for_update_rereads_the_row(engine: Any, session: Session) -> None:
    row = _create(session)
    session.commit()
    with engine.begin() as connection:
        connection.execute(
            sa.update(ScheduledTask).where(ScheduledTask.id == row.id).values(description="new")
        )
    assert store.get_schedule(session, row.id).description == ""  # identity map, no query
    assert store.get_schedule(session, row.id, for_update=True).description == "new"


# ---------------------------------------------------------------- update


def test_update_without_trigger_change_keeps_next_run_and_bumps_version(
    session: Session,
) -> None:
    row = _create(session)
    later = NOW + timedelta(minutes=30)
    updated = store.update_schedule(
        session, row.id, {"description": "hourly sync"}, now=later, default_timezone=TZ
    )
    assert updated.description == "hourly sync"
    assert updated.version == 2
    assert updated.updated_at == later
    assert updated.next_run_at == NOW + timedelta(hours=1)


def test_update_of_the_trigger_recomputes_from_now(session: Session) -> None:
    row = _create(session)
    later = NOW + timedelta(minutes=50)
    store.update_schedule(
        session, row.id, {"interval_seconds": 1200}, now=later, default_timezone=TZ
    )
    # grid anchored at created_at: 12:20, 12:40, 13:00 ... first after 12:50 is 13:00
    assert row.next_run_at == NOW + timedelta(hours=1)
    store.update_schedule(
        session,
        row.id,
        {"task_type": "cron", "cron_expression": "*/5 * * * *"},
        now=later,
        default_timezone=TZ,
    )
    assert row.next_run_at == NOW + timedelta(minutes=55)
    assert row.version == 3


def test_update_to_paused_clears_next_run(session: Session) -> None:
    row = _create(session)
    store.update_schedule(session, row.id, {"status": "paused"}, now=NOW, default_timezone=TZ)
    assert row.status is TaskStatus.PAUSED
    assert row.next_run_at is None


def test_an_update_that_changes_nothing_keeps_the_version(session: Session) -> None:
    row = _create(session)
    store.update_schedule(
        session, row.id, {"interval_seconds": 3600, "name": "hourly"}, now=NOW, default_timezone=TZ
    )
    assert row.version == 1


def test_update_with_a_stale_version_conflicts(session: Session) -> None:
    row = _create(session)
    store.update_schedule(
        session, row.id, {"description": "a"}, now=NOW, default_timezone=TZ, expected_version=1
    )
    with pytest.raises(ConflictError, match="version 2, not 1") as caught:
        store.update_schedule(
            session, row.id, {"description": "b"}, now=NOW, default_timezone=TZ, expected_version=1
        )
    assert caught.value.details["current_version"] == 2
    assert row.description == "a"


def test_an_invalid_update_leaves_the_row_as_it_was(session: Session) -> None:
    row = _create(session)
    session.commit()
    with pytest.raises(InvalidSchedule) as caught:
        store.update_schedule(
            session,
            row.id,
            {"task_type": "cron", "cron_expression": "61 * * * *"},
            now=NOW,
            default_timezone=TZ,
        )
    assert caught.value.field == "cron_expression"
    assert row.task_type is TaskType.INTERVAL
    assert row.cron_expression is None
    assert row.version == 1
    assert session.is_modified(row) is False


def test_update_refuses_unknown_fields_and_past_run_at(session: Session) -> None:
    row = _create(session, "once", task_type="date", run_at=NOW + timedelta(days=1))
    with pytest.raises(InvalidSchedule) as caught:
        store.update_schedule(session, row.id, {"run_count": 0}, now=NOW, default_timezone=TZ)
    assert caught.value.field == "run_count"
    with pytest.raises(InvalidSchedule) as caught:
        store.update_schedule(
            session, row.id, {"run_at": NOW - timedelta(days=1)}, now=NOW, default_timezone=TZ
        )
    assert caught.value.field == "run_at"


def test_renaming_onto_a_taken_name_conflicts_and_keeps_the_session(session: Session) -> None:
    first = _create(session, "first")
    second = _create(session, "second")
    session.commit()
    with pytest.raises(ConflictError, match="'first' already exists"):
        store.update_schedule(session, second.id, {"name": "first"}, now=NOW, default_timezone=TZ)

    store.update_schedule(session, first.id, {"description": "ok"}, now=NOW, default_timezone=TZ)
    session.commit()
    assert store.get_schedule(session, second.id).name == "second"
    assert store.get_schedule(session, second.id).version == 1
    assert store.get_schedule(session, first.id).description == "ok"


def test_update_of_a_missing_schedule_is_not_found(session: Session) -> None:
    with pytest.raises(ScheduleNotFound):
        store.update_schedule(session, 42, {"description": "x"}, now=NOW, default_timezone=TZ)


# ---------------------------------------------------------------- pause / resume / delete


def test_pause_is_idempotent(session: Session) -> None:
    row = _create(session)
    store.pause_schedule(session, row.id, now=NOW)
    store.pause_schedule(session, row.id, now=NOW + timedelta(minutes=1))
    assert row.status is TaskStatus.PAUSED
    assert row.next_run_at is None
    assert row.version == 2
    assert row.updated_at == NOW


def test_resume_recomputes_from_now_and_never_bursts(session: Session) -> None:
    row = _create(session, interval_seconds=600)
    store.pause_schedule(session, row.id, now=NOW)
    much_later = NOW + timedelta(hours=5, minutes=3)
    store.resume_schedule(session, row.id, now=much_later, default_timezone=TZ)
    assert row.status is TaskStatus.ACTIVE
    assert row.next_run_at == NOW + timedelta(hours=5, minutes=10)  # the grid, after now
    assert row.version == 3

    store.resume_schedule(session, row.id, now=much_later + timedelta(hours=1), default_timezone=TZ)
    assert row.next_run_at == NOW + timedelta(hours=5, minutes=10)
    assert row.version == 3


def test_resuming_a_fired_one_shot_conflicts(session: Session) -> None:
    row = _create(session, "once", task_type="date", run_at=NOW + timedelta(minutes=5))
    store.pause_schedule(session, row.id, now=NOW)
    with pytest.raises(ConflictError, match="run_at") as caught:
        store.resume_schedule(session, row.id, now=NOW + timedelta(hours=1), default_timezone=TZ)
    assert caught.value.field == "run_at"
    assert row.status is TaskStatus.PAUSED


def test_compute_next_run_validates_even_when_paused(session: Session) -> None:
    row = _create(session, status="paused")
    assert store.compute_next_run(row, now=NOW, default_timezone=TZ) is None
    row.timezone = "Nowhere/Land"
    with pytest.raises(InvalidSchedule):
        store.compute_next_run(row, now=NOW, default_timezone=TZ)
    session.rollback()


def test_delete_keeps_history_and_protects_system_schedules(session: Session) -> None:
    row = _create(session)
    system = _create(session, "reaper", is_system=True)
    session.add(
        TaskExecution(
            scheduled_task_id=row.id, task_name="app.sync", celery_task_id="c1", trigger="manual"
        )
    )
    session.commit()

    deleted = store.delete_schedule(session, row.id)
    assert deleted.name == "hourly"
    with pytest.raises(ConflictError, match="system schedule"):
        store.delete_schedule(session, system.id)
    session.commit()

    with pytest.raises(ScheduleNotFound):
        store.get_schedule(session, row.id)
    assert session.scalars(sa.select(TaskExecution.scheduled_task_id)).one() is None
    store.delete_schedule(session, system.id, allow_system=True)
    with pytest.raises(ScheduleNotFound):
        store.delete_schedule(session, system.id)


# ---------------------------------------------------------------- list


@pytest.fixture
def catalogue(session: Session) -> list[ScheduledTask]:
    rows = [
        _create(session, "alpha", description="Nightly REPORT", task_name="app.report"),
        _create(session, "beta", status="paused", task_name="app.sync"),
        _create(session, "gamma_100%", task_type="manual", task_name="app.cleanup"),
        _create(session, "delta", interval_seconds=60, task_name="app.sync"),
        _create(session, "gamma-100x", task_type="manual", task_name="app.cleanup"),
    ]
    session.commit()
    return rows


def _names(page: store.Page[ScheduledTask]) -> list[str]:
    return [row.name for row in page.items]


def test_list_filters(session: Session, catalogue: list[ScheduledTask]) -> None:
    assert _names(store.list_schedules(session, status="paused")) == ["beta"]
    assert _names(store.list_schedules(session, task_type=TaskType.MANUAL)) == [
        "gamma_100%",
        "gamma-100x",
    ]
    assert _names(store.list_schedules(session, task_names=["app.sync"])) == ["beta", "delta"]
    assert store.list_schedules(session, task_names=[], count=True).total == 0
    assert _names(store.list_schedules(session, search="REPORT")) == ["alpha"]  # its task name
    assert store.list_schedules(session, search="nightly").items == []  # descriptions: not read
    assert _names(store.list_schedules(session, search="CLEANUP")) == ["gamma_100%", "gamma-100x"]
    # LIKE wildcards in the search text are literal
    assert _names(store.list_schedules(session, search="100%")) == ["gamma_100%"]
    assert _names(store.list_schedules(session, search="a_1")) == ["gamma_100%"]
    combined = store.list_schedules(session, status="active", task_names=["app.sync"])
    assert _names(combined) == ["delta"]


def test_list_pages(session: Session, catalogue: list[ScheduledTask]) -> None:
    first = store.list_schedules(session, page=1, page_size=2, count=True)
    third = store.list_schedules(session, page=3, page_size=2)
    beyond = store.list_schedules(session, page=9, page_size=2, count=True)
    assert (first.total, first.page, first.page_size) == (5, 1, 2)
    assert _names(first) == ["alpha", "beta"]
    assert first.next_cursor is not None
    assert _names(third) == ["gamma-100x"]
    assert (third.total, third.next_cursor) == (None, None), "not counted unless asked; last"
    assert beyond.items == []
    assert beyond.total == 5
    assert store.list_schedules(session, page_size=10_000).page_size == store.MAX_PAGE_SIZE


def test_list_sorts(session: Session, catalogue: list[ScheduledTask]) -> None:
    assert _names(store.list_schedules(session, sort="-name")) == [
        "gamma_100%",
        "gamma-100x",
        "delta",
        "beta",
        "alpha",
    ]
    by_next = _names(store.list_schedules(session, sort="next_run_at"))
    assert by_next[:2] == ["delta", "alpha"]  # one minute, one hour; NULLs last
    assert set(by_next[2:]) == {"beta", "gamma_100%", "gamma-100x"}
    assert _names(store.list_schedules(session, sort="-next_run_at"))[:2] == ["alpha", "delta"]
    assert _names(store.list_schedules(session, sort="-id"))[0] == "gamma-100x"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "colour"}, "sort"),
        ({"sort": "--name"}, "sort"),
        ({"page": 0}, "page"),
        ({"page_size": 0}, "page_size"),
        ({"status": "asleep"}, "status"),
        ({"task_type": "weekly"}, "task_type"),
    ],
)
def test_list_refuses_bad_parameters(session: Session, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        store.list_schedules(session, **params)
    assert caught.value.field == field
    assert caught.value.errors[0]["loc"] == ["query", field]
