"""``POST /tasks/{id}/backfill`` and ``/backfill/cancel`` on real PostgreSQL: the slots
a schedule's trigger fires in a past range, created ``queued`` with trigger
``backfill`` (a dry run lists them), slots with a row left alone and reported, the
range checked field by field, and the waiting slots cancelled. Sending them in turn is
the beat's (``tests/integration/test_backfill_runs.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from tests.api.helpers import READ_KEY, RecordingDispatcher, add_schedule

from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.core.triggers import fire_times, trigger_for
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import AuditEntry, TaskExecution

pytestmark = pytest.mark.anyio

DAY = datetime(2026, 3, 2, tzinfo=UTC)


def _rows(runtime: Runtime, schedule_id: int) -> list[TaskExecution]:
    with runtime.session() as session:
        rows = list(
            session.scalars(
                sa.select(TaskExecution)
                .where(TaskExecution.scheduled_task_id == schedule_id)
                .order_by(TaskExecution.scheduled_for)
            )
        )
        session.expunge_all()
    return rows


def _range(start: datetime, end: datetime, **extra: Any) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": end.isoformat(), **extra}


def _slots(items: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(item["scheduled_for"]) for item in items]


async def test_a_dry_run_lists_the_slots_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime, task_type="cron", cron_expression="0 */6 * * *")

    response = await client.post(
        f"/tasks/{row.id}/backfill", json=_range(DAY, DAY + timedelta(days=1), dry_run=True)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True
    assert _slots(body["created"]) == [DAY + timedelta(hours=h) for h in (0, 6, 12, 18)]
    assert {(item["execution_id"], item["status"]) for item in body["created"]} == {(None, None)}
    assert body["existing"] == []
    assert _rows(runtime, row.id) == []
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0


async def test_a_backfill_queues_its_slots_and_leaves_the_ones_with_a_row(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(
        runtime, task_type="cron", cron_expression="0 */6 * * *", handler_kwargs={"days": 2}
    )
    claimed = DAY + timedelta(hours=6)
    with runtime.session() as session:  # a slot its scheduler once ran
        session.add(
            TaskExecution(
                scheduled_task_id=row.id,
                scheduled_for=claimed,
                task_name=row.task_name,
                celery_task_id="ran-before",
                trigger=ExecutionTrigger.SCHEDULE,
                status=ExecutionStatus.SUCCESS,
                created_at=claimed,
            )
        )

    response = await client.post(
        f"/tasks/{row.id}/backfill", json=_range(DAY, DAY + timedelta(days=1))
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is False
    assert _slots(body["created"]) == [DAY + timedelta(hours=h) for h in (0, 12, 18)]
    assert {item["status"] for item in body["created"]} == {"queued"}
    (existing,) = body["existing"]
    assert datetime.fromisoformat(existing["scheduled_for"]) == claimed
    assert existing["status"] == "success"
    rows = _rows(runtime, row.id)
    assert [(r.scheduled_for, r.trigger, r.status) for r in rows] == [
        (DAY, ExecutionTrigger.BACKFILL, ExecutionStatus.QUEUED),
        (claimed, ExecutionTrigger.SCHEDULE, ExecutionStatus.SUCCESS),
        (DAY + timedelta(hours=12), ExecutionTrigger.BACKFILL, ExecutionStatus.QUEUED),
        (DAY + timedelta(hours=18), ExecutionTrigger.BACKFILL, ExecutionStatus.QUEUED),
    ]
    assert [r.id for r in rows if r.trigger is ExecutionTrigger.BACKFILL] == [
        item["execution_id"] for item in body["created"]
    ]
    assert rows[0].kwargs == {"days": 2, "scheduled_task_id": row.id}
    assert dispatcher.sent == [], "the beat sends a backfill's slots, one at a time"
    audit = (await client.get("/audit", params={"action": "backfill"})).json()["items"]
    assert [(a["target_id"], a["after"]["created"], a["after"]["existing"]) for a in audit] == [
        (row.id, 3, 1)
    ]

    again = await client.post(
        f"/tasks/{row.id}/backfill", json=_range(DAY, DAY + timedelta(days=1))
    )
    assert again.json()["created"] == []
    assert [item["status"] for item in again.json()["existing"]] == [
        "queued",
        "success",
        "queued",
        "queued",
    ]


@pytest.mark.parametrize(
    ("cron", "start", "end", "expected"),
    [
        pytest.param(
            # fall back: 01:00 happens twice and fires once, at its first occurrence (EDT)
            "0 * * * *",
            "2026-11-01T00:00:00-04:00",
            "2026-11-01T04:00:00-05:00",
            ["04:00", "05:00", "07:00", "08:00"],
            id="fall-back",
        ),
        pytest.param(
            # spring forward: 02:30 does not exist and fires at 03:00 EDT
            "30 2 * * *",
            "2026-03-07T00:00:00-05:00",
            "2026-03-10T00:00:00-04:00",
            ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"],
            id="spring-forward",
        ),
    ],
)
async def test_a_backfill_over_a_dst_night_has_exactly_the_triggers_slots(
    client: httpx.AsyncClient,
    runtime: Runtime,
    cron: str,
    start: str,
    end: str,
    expected: list[str],
) -> None:
    row = add_schedule(runtime, task_type="cron", cron_expression=cron, timezone="America/New_York")

    response = await client.post(f"/tasks/{row.id}/backfill", json={"start": start, "end": end})

    assert response.status_code == 200, response.text
    got = _slots(response.json()["created"])
    day = "2026-11-01T"
    assert [slot.astimezone(UTC) for slot in got] == [
        datetime.fromisoformat(f"{text if 'T' in text else day + text}+00:00") for text in expected
    ]
    begin = datetime.fromisoformat(start)
    trigger = trigger_for(row, "UTC")
    told = fire_times(trigger, begin - timedelta(microseconds=1), 50)
    assert got == [t for t in told if t < datetime.fromisoformat(end)]
    assert [r.scheduled_for for r in _rows(runtime, row.id)] == got


async def test_the_range_is_checked_field_by_field(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime, task_type="cron", cron_expression="* * * * *")
    url = f"/tasks/{row.id}/backfill"
    future = datetime.now(UTC) + timedelta(hours=1)
    cases: list[tuple[Any, list[Any], str]] = [
        (_range(DAY, DAY), ["body", "end"], "must be after start"),
        (_range(DAY, DAY - timedelta(hours=1)), ["body", "end"], "must be after start"),
        (_range(DAY, future), ["body", "end"], "is in the future"),
        (
            _range(DAY, DAY + timedelta(minutes=1001)),
            ["body", "end"],
            "holds more than 1000 slots (backfill_max_slots)",
        ),
        ({"start": "2026-03-02T00:00", "end": DAY.isoformat()}, ["body", "start"], "timezone"),
        ({"start": DAY.isoformat()}, ["body", "end"], "Field required"),
        ({**_range(DAY, DAY + timedelta(hours=1)), "dry_run": "yes"}, ["body", "dry_run"], "bool"),
        ({**_range(DAY, DAY + timedelta(hours=1)), "slots": 3}, ["body", "slots"], "Extra"),
    ]
    for body, loc, message in cases:
        response = await client.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        (problem,) = response.json()["detail"]
        assert problem["loc"] == loc, (body, problem)
        assert message in problem["msg"], (body, problem)
    assert _rows(runtime, row.id) == []

    exactly = await client.post(url, json=_range(DAY, DAY + timedelta(minutes=1000)))
    assert exactly.status_code == 200, exactly.text
    assert len(exactly.json()["created"]) == 1000


async def test_backfill_refuses_a_manual_schedule_an_unknown_one_and_a_read_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    manual = add_schedule(runtime, task_type="manual", interval_seconds=None)
    cron = add_schedule(runtime, "cron", task_type="cron", cron_expression="0 * * * *")
    body = _range(DAY, DAY + timedelta(hours=2))

    refused = await client.post(f"/tasks/{manual.id}/backfill", json=body)
    assert refused.status_code == 409
    assert "manual: it has no slots to backfill" in refused.json()["detail"]
    assert (await client.post("/tasks/999999/backfill", json=body)).status_code == 404
    read_only = await client.post(
        f"/tasks/{cron.id}/backfill", json=body, headers={"X-API-Key": READ_KEY}
    )
    assert read_only.status_code == 403
    cancel = await client.post(f"/tasks/{cron.id}/backfill/cancel", headers={"X-API-Key": READ_KEY})
    assert cancel.status_code == 403
    assert _rows(runtime, cron.id) == []


async def test_cancelling_a_backfill_revokes_the_slots_still_waiting(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime, task_type="cron", cron_expression="0 * * * *")
    other = add_schedule(runtime, "other", task_type="cron", cron_expression="0 * * * *")
    for schedule in (row, other):
        done = await client.post(
            f"/tasks/{schedule.id}/backfill", json=_range(DAY, DAY + timedelta(hours=3))
        )
        assert len(done.json()["created"]) == 3
    first = _rows(runtime, row.id)[0]
    with runtime.session() as session:  # its turn came: sent, and running on
        store.mark_sent(session, [first.id], now=datetime.now(UTC))
        session.execute(
            sa.update(TaskExecution)
            .where(TaskExecution.id == first.id)
            .values(status=ExecutionStatus.PENDING)
        )

    response = await client.post(f"/tasks/{row.id}/backfill/cancel", json={"reason": "wrong range"})

    assert response.status_code == 200, response.text
    assert response.json() == {"scheduled_task_id": row.id, "cancelled": 2}
    statuses = [(r.status, r.error) for r in _rows(runtime, row.id)]
    assert statuses == [
        (ExecutionStatus.PENDING, None),
        *[(ExecutionStatus.REVOKED, "backfill cancelled by key:1: wrong range")] * 2,
    ]
    assert {r.status for r in _rows(runtime, other.id)} == {ExecutionStatus.QUEUED}
    audit = (await client.get("/audit", params={"action": "cancel"})).json()["items"]
    assert [a["after"] for a in audit] == [{"backfill_cancelled": 2, "reason": "wrong range"}]
    again = await client.post(f"/tasks/{row.id}/backfill/cancel")
    assert again.json()["cancelled"] == 0
    assert (await client.post("/tasks/999999/backfill/cancel")).status_code == 404
