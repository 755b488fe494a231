"""Run now, pause, resume, run history and one run with its log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tests.api.helpers import READ_KEY, RecordingDispatcher, add_schedule
from tests.runs import celery_id, finish, manual

from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql import store

pytestmark = pytest.mark.anyio


def _execution(
    runtime: Runtime,
    schedule_id: int | None,
    task_id: str | None = None,
    *,
    task_name: str = "dftest.sync_accounts",
    kwargs: dict[str, Any] | None = None,
) -> int:
    with runtime.session() as session:
        row = manual(
            session,
            scheduled_task_id=schedule_id,
            task_name=task_name,
            celery_task_id=task_id or str(uuid.uuid4()),
            kwargs=kwargs or {},
            now=datetime.now(UTC),
        )
        return row.id


def _finish(runtime: Runtime, execution_id: int, status: ExecutionStatus, log: str | None) -> None:
    with runtime.session() as session:
        row = store.get_execution(session, execution_id)
        finish(
            session,
            celery_task_id=row.celery_task_id,
            status=status,
            now=datetime.now(UTC),
            log_output=log,
        )


# ---------------------------------------------------------------- run now


async def test_run_now_records_a_pending_manual_row_then_sends(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(
        runtime, task_name="dftest.report", handler_kwargs={"days": 3}, queue="reports"
    )

    response = await client.post(f"/tasks/{row.id}/run")

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "pending"
    assert accepted["kwargs"] == {"days": 3, "scheduled_task_id": row.id}
    (sent,) = dispatcher.sent
    assert sent.task_name == "dftest.report"
    assert sent.task_id == accepted["task_id"]
    assert sent.kwargs == {"days": 3, "scheduled_task_id": row.id}
    assert sent.options == {"queue": "reports"}
    assert sent.headers == {
        "df_trigger": "manual",
        "df_execution_id": accepted["execution_id"],
        "df_overlap": "skip",
    }
    uuid.UUID(accepted["task_id"])
    with runtime.session() as session:
        execution = store.get_execution(session, accepted["execution_id"])
        assert execution.status is ExecutionStatus.PENDING
        assert execution.trigger == "manual"
        assert execution.celery_task_id == accepted["task_id"]
        assert execution.sent_at is not None  # the reaper judges a pending row from here
    audit = (await client.get("/audit", params={"action": "run"})).json()
    assert audit["items"][0]["after"]["execution_id"] == accepted["execution_id"]


async def test_run_now_override_is_validated_like_handler_kwargs(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(runtime, task_name="dftest.report", handler_kwargs={"days": 3})

    good = await client.post(f"/tasks/{row.id}/run", json={"kwargs": {"days": "9", "fmt": "pdf"}})
    bad = await client.post(f"/tasks/{row.id}/run", json={"kwargs": {"days": "many"}})
    extra = await client.post(f"/tasks/{row.id}/run", json={"kwargs": {"nope": 1}})
    shape = await client.post(f"/tasks/{row.id}/run", json={"kwarg": {}})

    assert good.status_code == 202
    assert dispatcher.sent[0].kwargs == {"days": 9, "fmt": "pdf", "scheduled_task_id": row.id}
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "kwargs", "days"]
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"] == ["body", "kwargs", "nope"]
    assert shape.status_code == 422
    assert len(dispatcher.sent) == 1


async def test_run_early_takes_the_place_of_the_next_slot(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(runtime)  # every hour
    slot = row.next_run_at
    assert slot is not None

    early = await client.post(f"/tasks/{row.id}/run", json={"skip_next": True})
    again = await client.post(f"/tasks/{row.id}/run", json={"skip_next": True})

    assert early.status_code == 202, early.text
    accepted = early.json()
    assert datetime.fromisoformat(accepted["skipped_slot"]) == slot
    assert len(dispatcher.sent) == 1
    with runtime.session() as session:
        rows = store.list_executions(session, scheduled_task_id=row.id).items
        skipped = [r for r in rows if r.scheduled_for is not None]
        assert [(r.scheduled_for, r.status, r.trigger) for r in skipped] == [
            (slot, ExecutionStatus.SKIPPED, "schedule")
        ]
        assert skipped[0].error == (
            f"ran early: run now (execution {accepted['execution_id']}) took this slot"
        )
        assert skipped[0].finished_at is not None
    assert again.status_code == 409, "the next slot is already taken"
    assert "already has a run" in again.json()["detail"]
    assert len(dispatcher.sent) == 1, "a refused run early sends nothing"
    audit = (await client.get("/audit", params={"action": "run"})).json()["items"]
    assert [entry["after"].get("skip_next") for entry in audit] == [True]


async def test_run_early_needs_a_next_slot_and_gives_it_back_when_unsent(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    manual_only = add_schedule(runtime, "by-hand", task_type="manual", interval_seconds=None)
    paused = add_schedule(runtime, "resting", status="paused")
    hourly = add_schedule(runtime, "hourly-2")

    no_slot = await client.post(f"/tasks/{manual_only.id}/run", json={"skip_next": True})
    resting = await client.post(f"/tasks/{paused.id}/run", json={"skip_next": True})
    not_a_flag = await client.post(f"/tasks/{hourly.id}/run", json={"skip_next": "yes"})
    dispatcher.down = True
    refused = await client.post(f"/tasks/{hourly.id}/run", json={"skip_next": True})

    assert no_slot.status_code == 409
    assert "no next slot to skip (no next run)" in no_slot.json()["detail"]
    assert resting.status_code == 409
    assert "(paused)" in resting.json()["detail"]
    assert not_a_flag.status_code == 422
    assert not_a_flag.json()["detail"][0]["loc"] == ["body", "skip_next"]
    assert refused.status_code == 503
    with runtime.session() as session:
        rows = store.list_executions(session, scheduled_task_id=hourly.id).items
        assert [(r.scheduled_for, r.status) for r in rows] == [(None, ExecutionStatus.FAILED)]
    dispatcher.down = False
    retried = await client.post(f"/tasks/{hourly.id}/run", json={"skip_next": True})
    assert retried.status_code == 202, "the slot was given back, so it can be skipped now"


async def test_run_now_of_an_unknown_schedule_is_404(
    client: httpx.AsyncClient, dispatcher: RecordingDispatcher
) -> None:
    response = await client.post("/tasks/777/run")

    assert response.status_code == 404
    assert dispatcher.sent == []


async def test_run_now_when_the_broker_is_down_is_503_and_the_row_failed(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(runtime)
    dispatcher.down = True

    response = await client.post(f"/tasks/{row.id}/run")

    assert response.status_code == 503
    # which backend, in a stable phrase; the driver's words stay in the log
    assert response.json()["detail"] == (
        "the run was recorded but could not be sent: the broker is unavailable"
    )
    with runtime.session() as session:
        (execution,) = store.list_executions(session, scheduled_task_id=row.id).items
        assert execution.status is ExecutionStatus.FAILED
        assert "not sent" in (execution.error or "")
        assert execution.sent_at is None
        schedule = store.get_schedule(session, row.id)
        # a run that never started is not a run (as beat's unregistered slots)
        assert (schedule.run_count, schedule.failure_count) == (0, 0)
        assert (schedule.last_status, schedule.last_execution_id) == (
            ExecutionStatus.FAILED,
            execution.id,
        )


async def test_run_now_without_a_dispatcher_is_503(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    runtime.dispatcher = None

    response = await client.post(f"/tasks/{row.id}/run")

    assert response.status_code == 503
    with runtime.session() as session:
        assert store.list_executions(session, scheduled_task_id=row.id).items == []


async def test_run_now_of_an_unregistered_task_is_422(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime, task_name="gone.task")
    response = await client.post(f"/tasks/{row.id}/run")

    assert response.status_code == 422
    assert "not registered" in response.json()["detail"]


# ---------------------------------------------------------------- pause / resume


async def test_pause_and_resume_are_idempotent_and_audited_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)

    first = await client.post(f"/tasks/{row.id}/pause")
    second = await client.post(f"/tasks/{row.id}/pause")
    resumed = await client.post(f"/tasks/{row.id}/resume")
    again = await client.post(f"/tasks/{row.id}/resume")

    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == "paused"
    assert first.json()["next_run_at"] is None
    assert second.json()["version"] == first.json()["version"]
    assert resumed.json()["status"] == "active"
    assert resumed.json()["next_run_at"] is not None
    assert again.json()["version"] == resumed.json()["version"]
    actions = [e["action"] for e in (await client.get("/audit")).json()["items"]]
    assert actions == ["resume", "pause"]


async def test_a_pause_note_shows_with_the_status_until_resumed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)

    paused = await client.post(f"/tasks/{row.id}/pause", json={"note": "上游接口维护"})
    renoted = await client.post(f"/tasks/{row.id}/pause", json={"note": "until Monday"})
    listed = (await client.get("/tasks", params={"status": "paused"})).json()["items"]
    detail = (await client.get(f"/tasks/{row.id}")).json()
    resumed = await client.post(f"/tasks/{row.id}/resume")

    assert paused.status_code == 200, paused.text
    assert (paused.json()["status"], paused.json()["pause_note"]) == ("paused", "上游接口维护")
    assert renoted.json()["pause_note"] == "until Monday"
    assert [(item["id"], item["pause_note"]) for item in listed] == [(row.id, "until Monday")]
    assert detail["pause_note"] == "until Monday"
    assert (resumed.json()["status"], resumed.json()["pause_note"]) == ("active", None)
    audit = (await client.get("/audit")).json()["items"]
    assert [entry["action"] for entry in audit] == ["resume", "pause", "pause"]
    assert audit[1]["before"]["pause_note"] == "上游接口维护"
    assert audit[1]["after"]["pause_note"] == "until Monday"


async def test_a_pause_note_is_checked_and_needs_a_write_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)

    for body in ({"note": ""}, {"note": "x" * 501}, {"note": 5}, {"notes": "x"}):
        refused = await client.post(f"/tasks/{row.id}/pause", json=body)
        assert refused.status_code == 422, body
        assert refused.json()["detail"][0]["loc"][:2] == ["body", next(iter(body))]
    read_only = await client.post(
        f"/tasks/{row.id}/pause", json={"note": "x"}, headers={"X-API-Key": READ_KEY}
    )
    assert read_only.status_code == 403
    assert (await client.get(f"/tasks/{row.id}")).json()["status"] == "active"


async def test_pause_after_failures_is_set_shown_checked_and_cleared(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "name": "fragile",
        "task_type": "interval",
        "task_name": "dftest.sync_accounts",
        "interval_seconds": 60,
        "pause_after_failures": 3,
    }
    created = await client.post("/tasks", json=body)
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["pause_after_failures"], task["failure_streak"], task["pause_note"]) == (
        3,
        0,
        None,
    )
    for bad in (0, -2, "3", 2.5, True):
        refused = await client.patch(f"/tasks/{task['id']}", json={"pause_after_failures": bad})
        assert refused.status_code == 422, bad
        assert refused.json()["detail"][0]["loc"] == ["body", "pause_after_failures"]
    cleared = await client.patch(f"/tasks/{task['id']}", json={"pause_after_failures": None})
    assert cleared.json()["pause_after_failures"] is None


async def test_max_runs_is_set_shown_and_checked(client: httpx.AsyncClient) -> None:
    body = {
        "name": "thrice",
        "task_type": "interval",
        "task_name": "dftest.sync_accounts",
        "interval_seconds": 60,
        "max_runs": 3,
    }
    created = await client.post("/tasks", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["max_runs"] == 3
    for bad in (0, -1, "3", 1.5, False):
        refused = await client.patch(f"/tasks/{created.json()['id']}", json={"max_runs": bad})
        assert refused.status_code == 422, bad
        assert refused.json()["detail"][0]["loc"] == ["body", "max_runs"]
    unlimited = await client.patch(f"/tasks/{created.json()['id']}", json={"max_runs": None})
    assert unlimited.json()["max_runs"] is None


async def test_pause_unknown_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.post("/tasks/4040/pause")).status_code == 404
    assert (await client.post("/tasks/4040/resume")).status_code == 404


# ---------------------------------------------------------------- executions


async def test_history_lists_newest_first_with_filters(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    ids = [_execution(runtime, row.id) for _ in range(3)]
    _finish(runtime, ids[0], ExecutionStatus.SUCCESS, "done")

    history = (await client.get(f"/tasks/{row.id}/executions")).json()
    finished = await client.get(f"/tasks/{row.id}/executions", params={"status": "success"})
    paged = (
        await client.get(f"/tasks/{row.id}/executions", params={"page_size": 1, "count": "true"})
    ).json()
    bad = await client.get(f"/tasks/{row.id}/executions", params={"status": "asleep"})
    missing = await client.get("/tasks/5555/executions")

    assert [item["id"] for item in history["items"]] == list(reversed(ids))
    assert [item["id"] for item in finished.json()["items"]] == [ids[0]]
    assert paged["total"] == 3
    assert len(paged["items"]) == 1
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "status"]
    assert missing.status_code == 404


async def test_one_run_shows_its_live_log_then_its_stored_log(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    execution_id = _execution(runtime, row.id)
    runtime.logbus.append(celery_id(runtime, execution_id), ["first", "second"])

    live = (await client.get(f"/executions/{execution_id}")).json()
    _finish(runtime, execution_id, ExecutionStatus.SUCCESS, "first\nsecond\nthird")
    stored = (await client.get(f"/executions/{execution_id}")).json()

    assert live["status"] == "pending"
    assert (live["log"], live["log_lines"]) == ("first\nsecond", 2)
    assert stored["status"] == "success"
    assert (stored["log"], stored["log_lines"]) == ("first\nsecond\nthird", 3)
    assert (await client.get("/executions/99999")).status_code == 404


# ---------------------------------------------------------------- cancel


async def test_cancelling_a_pending_run_revokes_it_at_once_with_who_and_why(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(runtime)
    execution_id = _execution(runtime, row.id)
    task_id = celery_id(runtime, execution_id)

    response = await client.post(
        f"/executions/{execution_id}/cancel", json={"reason": "wrong account"}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "execution_id": execution_id,
        "task_id": task_id,
        "status": "revoked",
        "terminating": False,
        "reason": "cancelled by key:1: wrong account",
    }
    assert dispatcher.cancelled == [task_id]
    assert dispatcher.cancel_signals == ["SIGTERM"]
    detail = (await client.get(f"/executions/{execution_id}")).json()
    assert (detail["status"], detail["error"]) == ("revoked", "cancelled by key:1: wrong account")
    assert detail["finished_at"] is not None
    audit = (await client.get("/audit")).json()["items"][0]
    assert (audit["action"], audit["target_type"], audit["target_id"]) == (
        "cancel",
        "execution",
        execution_id,
    )
    assert audit["before"] == {"status": "pending"}
    assert audit["after"]["status"] == "revoked"


async def test_cancelling_a_running_run_notes_why_and_leaves_its_end_to_the_worker(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(runtime)
    execution_id = _execution(runtime, row.id)
    task_id = celery_id(runtime, execution_id)
    with runtime.session() as session:  # as its worker's start record leaves it
        started = store.get_execution(session, execution_id)
        started.status, started.started_at = ExecutionStatus.RUNNING, datetime.now(UTC)

    response = await client.post(f"/executions/{execution_id}/cancel", json={"force": True})

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["terminating"]) == ("running", True)
    assert dispatcher.cancelled == [task_id]
    assert dispatcher.cancel_signals == ["SIGKILL"]
    assert runtime.backend.cancels.reason(task_id) == "cancelled by key:1"
    detail = (await client.get(f"/executions/{execution_id}")).json()
    assert detail["status"] == "running", "its worker records the end when it stops"


async def test_cancelling_an_ended_run_is_409_naming_its_status(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    execution_id = _execution(runtime, add_schedule(runtime).id)
    _finish(runtime, execution_id, ExecutionStatus.SUCCESS, "done")

    response = await client.post(f"/executions/{execution_id}/cancel")

    assert response.status_code == 409
    assert "has already ended (success)" in response.json()["detail"]
    assert dispatcher.cancelled == []


async def test_cancel_needs_a_write_key_an_existing_run_and_a_reachable_broker(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    execution_id = _execution(runtime, add_schedule(runtime).id)

    read_only = await client.post(
        f"/executions/{execution_id}/cancel", headers={"X-API-Key": READ_KEY}
    )
    missing = await client.post("/executions/999999/cancel")
    too_long = await client.post(f"/executions/{execution_id}/cancel", json={"reason": "x" * 501})
    not_a_flag = await client.post(f"/executions/{execution_id}/cancel", json={"force": "yes"})
    dispatcher.down = True
    refused = await client.post(f"/executions/{execution_id}/cancel")

    assert read_only.status_code == 403
    assert missing.status_code == 404
    assert too_long.status_code == 422
    assert "reason" in too_long.text
    assert not_a_flag.status_code == 422
    assert refused.status_code == 503
    assert "nothing was cancelled" in refused.json()["detail"]
    with runtime.session() as session:
        assert store.get_execution(session, execution_id).status is ExecutionStatus.PENDING


# ---------------------------------------------------------------- rerun


async def test_a_rerun_is_a_new_manual_run_of_the_same_task_linked_both_ways(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(
        runtime, task_name="dftest.report", handler_kwargs={"days": 3}, queue="reports"
    )
    original = _execution(
        runtime,
        row.id,
        task_name="dftest.report",
        kwargs={"days": 3, "fmt": "csv", "scheduled_task_id": row.id},
    )
    _finish(runtime, original, ExecutionStatus.FAILED, "boom")

    response = await client.post(f"/executions/{original}/rerun", json={"kwargs": {"days": "5"}})

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["rerun_of"] == original
    assert accepted["scheduled_task_id"] == row.id
    assert accepted["kwargs"] == {"days": 5, "fmt": "csv", "scheduled_task_id": row.id}
    (sent,) = dispatcher.sent
    assert (sent.task_name, sent.task_id) == ("dftest.report", accepted["task_id"])
    assert sent.kwargs == accepted["kwargs"]
    assert sent.options == {"queue": "reports"}, "the schedule's routing still applies"
    assert sent.headers["df_trigger"] == "manual"
    new = (await client.get(f"/executions/{accepted['execution_id']}")).json()
    assert (new["rerun_of"], new["trigger"], new["status"]) == (original, "manual", "pending")
    assert new["reruns"] == []
    old = (await client.get(f"/executions/{original}")).json()
    assert (old["rerun_of"], old["reruns"], old["status"]) == (None, [new["id"]], "failed")
    audit = (await client.get("/audit", params={"action": "rerun"})).json()["items"]
    assert [(a["target_type"], a["target_id"]) for a in audit] == [("execution", original)]
    assert audit[0]["after"]["execution_id"] == new["id"]
    history = (await client.get(f"/tasks/{row.id}/executions")).json()["items"]
    assert [(item["id"], item["rerun_of"]) for item in history] == [
        (new["id"], original),
        (original, None),
    ]


async def test_a_run_whose_schedule_was_deleted_is_run_again_as_a_bare_task(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(runtime)
    original = _execution(runtime, row.id, kwargs={"scheduled_task_id": row.id})
    _finish(runtime, original, ExecutionStatus.SUCCESS, None)
    assert (await client.delete(f"/tasks/{row.id}")).status_code == 204

    response = await client.post(f"/executions/{original}/rerun")

    assert response.status_code == 202, response.text
    assert response.json()["scheduled_task_id"] is None
    assert dispatcher.sent[0].kwargs == {}, "no stale schedule id: it would name a lock"


async def test_a_rerun_needs_an_ended_run_valid_kwargs_a_write_key_and_a_broker(
    client: httpx.AsyncClient, runtime: Runtime, dispatcher: RecordingDispatcher
) -> None:
    row = add_schedule(runtime, task_name="dftest.report", handler_kwargs={"days": 3})
    open_run = _execution(runtime, row.id, task_name="dftest.report", kwargs={"days": 3})
    ended = _execution(runtime, row.id, task_name="dftest.report", kwargs={"days": 3})
    _finish(runtime, ended, ExecutionStatus.SUCCESS, None)
    unknown = _execution(runtime, None, task_name="nobody.knows")
    _finish(runtime, unknown, ExecutionStatus.FAILED, None)

    still_open = await client.post(f"/executions/{open_run}/rerun")
    read_only = await client.post(f"/executions/{ended}/rerun", headers={"X-API-Key": READ_KEY})
    missing = await client.post("/executions/999999/rerun")
    bad = await client.post(f"/executions/{ended}/rerun", json={"kwargs": {"days": "many"}})
    extra = await client.post(f"/executions/{ended}/rerun", json={"kwargs": {"nope": 1}})
    shape = await client.post(f"/executions/{ended}/rerun", json={"kwarg": {}})
    unregistered = await client.post(f"/executions/{unknown}/rerun")
    assert dispatcher.sent == []
    dispatcher.down = True
    refused = await client.post(f"/executions/{ended}/rerun")

    assert still_open.status_code == 409
    assert "has not ended (pending)" in still_open.json()["detail"]
    assert read_only.status_code == 403
    assert missing.status_code == 404
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "kwargs", "days"]
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"] == ["body", "kwargs", "nope"]
    assert shape.status_code == 422
    assert unregistered.status_code == 422
    assert "nobody.knows" in unregistered.json()["detail"]
    assert refused.status_code == 503
    with runtime.session() as session:
        reruns = store.rerun_ids(session, ended)
        assert len(reruns) == 1, "the refused send still left its row, ended failed"
        unsent = store.get_execution(session, reruns[0])
        assert unsent.status is ExecutionStatus.FAILED
        assert str(unsent.error).startswith("not sent")


# ---------------------------------------------------------------- all runs, by cursor


async def test_every_run_is_listed_filtered_and_walked_by_cursor(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    one = add_schedule(runtime, "one")
    two = add_schedule(runtime, "two", task_name="dftest.report", handler_kwargs={"days": 1})
    ids = [_execution(runtime, one.id) for _ in range(3)]
    ids += [_execution(runtime, two.id, task_name="dftest.report") for _ in range(2)]
    ids.append(_execution(runtime, None, task_name="dftest.report"))
    _finish(runtime, ids[1], ExecutionStatus.FAILED, None)

    everything = (await client.get("/executions", params={"count": "true"})).json()
    walked: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"page_size": 4}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get("/executions", params=params)).json()
        walked += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    reports = (await client.get("/executions", params={"task_name": "dftest.report"})).json()
    of_two = (await client.get("/executions", params={"scheduled_task_id": two.id})).json()
    failed = (await client.get("/executions", params={"status": "failed"})).json()
    manual = (await client.get("/executions", params={"trigger": "manual"})).json()
    future = (await client.get("/executions", params={"since": "2999-01-01T00:00:00Z"})).json()
    past = (await client.get("/executions", params={"until": "2000-01-01T00:00:00+08:00"})).json()

    assert [item["id"] for item in everything["items"]] == list(reversed(ids))
    assert (everything["total"], everything["page"], everything["next_cursor"]) == (6, 1, None)
    assert walked == list(reversed(ids))
    assert [item["id"] for item in reports["items"]] == list(reversed(ids[3:]))
    assert reports["total"] is None, "counted only when asked"
    assert [item["id"] for item in of_two["items"]] == [ids[4], ids[3]]
    assert [item["id"] for item in failed["items"]] == [ids[1]]
    assert len(manual["items"]) == 6
    assert future["items"] == past["items"] == []


async def test_listings_refuse_bad_paging_naming_the_parameter(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    add_schedule(runtime, "another")
    for _ in range(3):
        _execution(runtime, row.id)
    first = (await client.get("/tasks", params={"page_size": 1})).json()
    assert first["next_cursor"] is not None
    cases = [
        ("/executions", {"cursor": "garbage!"}, "cursor"),
        ("/executions", {"status": "asleep"}, "status"),
        ("/executions", {"trigger": "cosmic"}, "trigger"),
        ("/executions", {"since": "yesterday"}, "since"),
        ("/executions", {"until": "2030-01-01T00:00:00"}, "until"),
        ("/executions", {"scheduled_task_id": "x"}, "scheduled_task_id"),
        ("/executions", {"count": "perhaps"}, "count"),
        ("/executions", {"cursor": "A" * 501}, "cursor"),
        ("/tasks", {"cursor": first["next_cursor"], "sort": "-name"}, "cursor"),
        ("/tasks", {"cursor": first["next_cursor"], "page": 2}, "cursor"),
        (f"/tasks/{row.id}/executions", {"cursor": "%%%"}, "cursor"),
        ("/audit", {"cursor": "e30"}, "cursor"),
    ]
    for path, params, field in cases:
        response = await client.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", field], (path, params)
    second = await client.get("/tasks", params={"page_size": 1, "cursor": first["next_cursor"]})
    assert second.status_code == 200
    assert second.json()["page"] is None
