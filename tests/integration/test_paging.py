"""Cursor (keyset) paging on PostgreSQL and SQLite: walking every sort of the schedule
list page by page by ``next_cursor`` gives exactly the one-page listing, NULLs and ties
included; rows added behind a walk never repeat it; a cursor is refused with a message
naming ``cursor`` when it is not one the listing gave; ``total`` is counted only when
asked."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from dataforge_scheduler.errors import InvalidParams
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SORTS = [
    f"{sign}{key}"
    for key in ("id", "name", "next_run_at", "last_run_at", "created_at")
    for sign in ("", "-")
]


@pytest.fixture
def factory(engine: Engine) -> Any:
    factory = make_session_factory(engine)
    with factory.begin() as session:
        for number in range(23):
            row = store.create_schedule(
                session,
                {
                    # names repeat a stem; ties in next_run_at and last_run_at; some NULL
                    "name": f"job-{number % 5}-{number:02d}",
                    "task_type": "interval" if number % 4 else "manual",
                    "task_name": "app.sync",
                    "interval_seconds": 60 * (1 + number % 3) if number % 4 else None,
                },
                now=NOW - timedelta(minutes=number % 2),
                default_timezone="UTC",
            )
            row.last_run_at = None if number % 3 == 0 else NOW + timedelta(hours=number % 4)
    return factory


def _walk(factory: Any, sort: str, size: int, **filters: Any) -> list[int]:
    seen: list[int] = []
    cursor = None
    for _ in range(100):
        with factory() as session:
            page = store.list_schedules(
                session, sort=sort, page_size=size, cursor=cursor, **filters
            )
        assert len(page.items) <= size
        seen += [row.id for row in page.items]
        if page.next_cursor is None:
            return seen
        assert page.page is None or cursor is None
        cursor = page.next_cursor
    raise AssertionError("the walk did not end")


@pytest.mark.parametrize("sort", SORTS)
def test_a_cursor_walk_is_the_whole_listing_in_order(factory: Any, sort: str) -> None:
    with factory() as session:
        whole = [row.id for row in store.list_schedules(session, sort=sort, page_size=200).items]
    assert len(whole) == 23
    for size in (1, 4, 7, 23):
        assert _walk(factory, sort, size) == whole, (sort, size)
    assert _walk(factory, sort, 3, task_type="interval") == [
        schedule_id for schedule_id in whole if _kind(factory, schedule_id) == "interval"
    ]


def _kind(factory: Any, schedule_id: int) -> str:
    with factory() as session:
        row = session.get(ScheduledTask, schedule_id)
        return str(row.task_type.value)


def test_rows_added_behind_a_walk_are_not_repeated(factory: Any) -> None:
    with factory() as session:
        first = store.list_schedules(session, sort="-id", page_size=5)
    with factory.begin() as session:
        store.create_schedule(
            session,
            {"name": "newcomer", "task_type": "manual", "task_name": "app.sync"},
            now=NOW,
            default_timezone="UTC",
        )
    with factory() as session:
        second = store.list_schedules(session, sort="-id", page_size=5, cursor=first.next_cursor)
    ids = [row.id for row in first.items + second.items]
    assert len(ids) == len(set(ids)) == 10
    assert ids == sorted(ids, reverse=True)


def test_total_is_counted_only_when_asked(factory: Any) -> None:
    with factory() as session:
        plain = store.list_schedules(session, page_size=5)
        counted = store.list_schedules(session, page_size=5, count=True)
        later = store.list_schedules(session, page_size=5, cursor=plain.next_cursor, count=True)
    assert (plain.total, plain.page) == (None, 1)
    assert (counted.total, later.total, later.page) == (23, 23, None)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("cursor", "why"),
    [
        ("not base64!", "cannot be read"),
        (_b64(b"not json"), "cannot be read"),
        (_b64(b'["id", null]'), "cannot be read"),
        (_b64(b'["name", "job", 3]'), "made for the order 'name', not 'id'"),
        (_b64(b'["id", null, -1]'), "not a row id"),
        (_b64(b'["id", null, true]'), "not a row id"),
        (_b64(b'["-next_run_at", {"t": "yesterday"}, 3]'), "time cannot be read"),
        (_b64(b'["-next_run_at", {"t": "2030-01-01T00:00:00"}, 3]'), "no offset"),
        (_b64(b'["-next_run_at", {"t": "0001-01-01T01:00:00+10:00"}, 3]'), "outside the calendar"),
        (_b64(b'["name", [1], 3]'), "not one the order's column holds"),
        (_b64(b'["name", 5, 3]'), "not one the order's column holds"),
        (_b64(b'["name", null, 3]'), "not one the order's column holds"),
        (_b64(b'["id", "x", 3]'), "not one the order's column holds"),
        (_b64(b'["-created_at", "2030-01-01", 3]'), "not one the order's column holds"),
        ("A" * 501, "too long"),
    ],
)
def test_a_cursor_the_listing_did_not_give_is_refused(factory: Any, cursor: str, why: str) -> None:
    sort = "id"
    if "next_run_at" in why or "time" in why or "offset" in why or "calendar" in why:
        sort = "-next_run_at"
    elif "column holds" in why:
        sort = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[0]
    with factory() as session, pytest.raises(InvalidParams) as refused:
        store.list_schedules(session, sort=sort, cursor=cursor)
    assert refused.value.field == "cursor"
    assert why in refused.value.message
    assert refused.value.errors[0]["loc"] == ["query", "cursor"]


def test_page_and_cursor_together_are_refused(factory: Any) -> None:
    with factory() as session:
        first = store.list_schedules(session, page_size=2)
        with pytest.raises(InvalidParams, match="cursor or page, not both"):
            store.list_schedules(session, page=2, cursor=first.next_cursor)


def test_executions_and_audit_walk_by_cursor_too(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with factory.begin() as session:
        for number in range(9):
            store.create_manual_run(
                session,
                schedule=None,
                task_name="app.sync",
                celery_task_id=f"c{number}",
                kwargs={},
                now=NOW + timedelta(seconds=number // 3),  # ties on created_at
            )
            store.record_audit(
                session,
                principal="key:1",
                action="run",
                target_type="execution",
                target_id=number,
                before=None,
                after=None,
                request_id=None,
                now=NOW + timedelta(seconds=number // 2),
            )
    for lister in (store.list_executions, store.list_audit):
        with factory() as session:
            whole = [row.id for row in lister(session, page_size=200).items]
            walked: list[int] = []
            cursor = None
            for _ in itertools.count():
                page = lister(session, page_size=2, cursor=cursor)
                walked += [row.id for row in page.items]
                cursor = page.next_cursor
                if cursor is None:
                    break
        assert walked == whole
        assert len(whole) == 9
