"""Schedules over HTTP: list (filters, paging, sort), detail, create with every
validation rule, update (PUT and PATCH), delete, and the audit rows they write."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.api.helpers import add_schedule, future

from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime

pytestmark = pytest.mark.anyio


def _cron(**extra: Any) -> dict[str, Any]:
    body = {
        "name": "nightly",
        "task_type": "cron",
        "task_name": "dftest.sync_accounts",
        "cron_expression": "0 3 * * *",
        "timezone": "Asia/Shanghai",
    }
    body.update(extra)
    return body


def _locs(response: httpx.Response) -> list[list[Any]]:
    return [item["loc"] for item in response.json()["detail"]]


# ---------------------------------------------------------------- create


async def test_create_cron_answers_201_with_the_row_and_next_run(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks", json=_cron(description="每晚同步"))

    assert response.status_code == 201, response.text
    row = response.json()
    assert row["id"] >= 1
    assert row["status"] == "active"
    assert row["description"] == "每晚同步"
    next_run = datetime.fromisoformat(row["next_run_at"])
    local = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    assert (local.hour, local.minute) == (3, 0)
    assert response.headers["location"] == f"tasks/{row['id']}"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"task_type": "cron", "cron_expression": None}, ["body", "cron_expression"]),
        ({"task_type": "cron", "cron_expression": "61 * * * *"}, ["body", "cron_expression"]),
        ({"task_type": "interval", "cron_expression": None}, ["body", "interval_seconds"]),
        ({"task_type": "interval", "interval_seconds": 0}, ["body", "interval_seconds"]),
        ({"task_type": "date", "cron_expression": None}, ["body", "run_at"]),
        ({"timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"task_name": "dftest.nope"}, ["body", "task_name"]),
        ({"handler_kwargs": {"x": 1}}, ["body", "handler_kwargs", "x"]),
        ({"name": ""}, ["body", "name"]),
        ({"unknown": 1}, ["body", "unknown"]),
        ({"priority": 256}, ["body", "priority"]),
        ({"is_system": True}, ["body", "is_system"]),
    ],
)
async def test_create_refuses_bad_input_with_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[Any]
) -> None:
    response = await client.post("/tasks", json=_cron(**body))

    assert response.status_code == 422, response.text
    assert loc in _locs(response)
    assert all(isinstance(item["msg"], str) and item["type"] for item in response.json()["detail"])


@pytest.mark.parametrize("policy", ["skip", "allow", "buffer_one", "cancel_other"])
async def test_create_stores_each_overlap_policy(client: httpx.AsyncClient, policy: str) -> None:
    response = await client.post("/tasks", json=_cron(overlap_policy=policy))

    assert response.status_code == 201, response.text
    assert response.json()["overlap_policy"] == policy
    got = await client.get(f"/tasks/{response.json()['id']}")
    assert got.json()["overlap_policy"] == policy


async def test_an_unknown_overlap_policy_is_a_422_listing_the_policies(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/tasks", json=_cron(overlap_policy="queue_all"))

    assert response.status_code == 422, response.text
    [item] = response.json()["detail"]
    assert item["loc"] == ["body", "overlap_policy"]
    for policy in ("skip", "allow", "buffer_one", "cancel_other"):
        assert policy in item["msg"]


async def test_create_without_an_overlap_policy_takes_the_tasks_registered_default(
    client: httpx.AsyncClient, registry: TaskRegistry
) -> None:
    registry.register(
        "dftest.exclusive", name="Exclusive", category="sync", overlap_policy="cancel_other"
    )
    defaulted = await client.post("/tasks", json=_cron(task_name="dftest.exclusive"))
    chosen = await client.post(
        "/tasks", json=_cron(name="chosen", task_name="dftest.exclusive", overlap_policy="skip")
    )
    plain = await client.post("/tasks", json=_cron(name="plain"))

    assert defaulted.json()["overlap_policy"] == "cancel_other", defaulted.text
    assert chosen.json()["overlap_policy"] == "skip"
    assert plain.json()["overlap_policy"] == "skip"  # no default registered
    detail = await client.get(f"/tasks/{defaulted.json()['id']}")
    assert detail.json()["registered"]["overlap_policy"] == "cancel_other", detail.text


@pytest.mark.parametrize("value", [True, "10", 1e3, 10.0])
@pytest.mark.parametrize(
    "field", ["interval_seconds", "priority", "expire_seconds", "misfire_grace_seconds"]
)
async def test_whole_number_fields_take_json_integers_only(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    body = _cron(task_type="interval", cron_expression=None, interval_seconds=60)
    body[field] = value
    created = await client.post("/tasks", json=body)
    assert created.status_code == 422, created.text
    assert ["body", field] in _locs(created)
    good = await client.post("/tasks", json={**body, field: 10, "name": f"ok-{field}"})
    assert good.status_code == 201, good.text
    changed = await client.patch(f"/tasks/{good.json()['id']}", json={field: value})
    assert changed.status_code == 422, changed.text
    assert ["body", field] in _locs(changed)


async def test_create_date_in_the_past_is_refused(client: httpx.AsyncClient) -> None:
    body = _cron(task_type="date", cron_expression=None, run_at=future(hours=-1).isoformat())
    response = await client.post("/tasks", json=body)

    assert response.status_code == 422
    assert ["body", "run_at"] in _locs(response)
    assert "not in the future" in response.text


async def test_create_each_type_that_is_valid(client: httpx.AsyncClient) -> None:
    bodies = [
        _cron(name="c"),
        _cron(name="i", task_type="interval", cron_expression=None, interval_seconds=60),
        _cron(name="d", task_type="date", cron_expression=None, run_at=future(days=1).isoformat()),
        _cron(name="m", task_type="manual", cron_expression=None),
    ]
    for body in bodies:
        response = await client.post("/tasks", json=body)
        assert response.status_code == 201, response.text
    rows = {row["name"]: row for row in (await client.get("/tasks")).json()["items"]}
    assert rows["m"]["next_run_at"] is None
    assert rows["i"]["next_run_at"] is not None


async def test_unregistered_task_name_lists_close_matches(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks", json=_cron(task_name="dftest.sync_acounts"))

    assert response.status_code == 422
    item = response.json()["detail"][0]
    assert item["loc"] == ["body", "task_name"]
    assert item["type"] == "unknown_task"
    assert "dftest.sync_accounts" in item["msg"]


async def test_handler_kwargs_are_validated_and_coerced(client: httpx.AsyncClient) -> None:
    base = _cron(task_name="dftest.report")
    missing = await client.post("/tasks", json=base)
    bad_choice = await client.post(
        "/tasks", json={**base, "handler_kwargs": {"days": 1, "fmt": "x"}}
    )
    good = await client.post("/tasks", json={**base, "handler_kwargs": {"days": "7"}})

    assert missing.status_code == 422
    assert ["body", "handler_kwargs", "days"] in _locs(missing)
    assert bad_choice.status_code == 422
    assert ["body", "handler_kwargs", "fmt"] in _locs(bad_choice)
    assert good.status_code == 201
    assert good.json()["handler_kwargs"] == {"days": 7}


async def test_duplicate_name_is_a_409(client: httpx.AsyncClient) -> None:
    assert (await client.post("/tasks", json=_cron())).status_code == 201
    response = await client.post("/tasks", json=_cron())

    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


# ---------------------------------------------------------------- list


async def test_list_filters_searches_sorts_and_pages(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for index in range(5):
        name = "sync-4-账号" if index == 4 else f"sync-{index}"
        add_schedule(runtime, name, description="账号 (not searched)" if index == 3 else "")
    add_schedule(runtime, "report", task_name="dftest.report", handler_kwargs={"days": 1})
    add_schedule(runtime, "once", task_type="manual", interval_seconds=None, status="paused")

    everything = (await client.get("/tasks", params={"count": "true"})).json()
    page = (
        await client.get(
            "/tasks", params={"page": 2, "page_size": 2, "sort": "-name", "count": "1"}
        )
    ).json()
    reports = (await client.get("/tasks", params={"category": "reports"})).json()
    paused = (await client.get("/tasks", params={"status": "paused"})).json()
    manual = (await client.get("/tasks", params={"task_type": "manual"})).json()
    found = (await client.get("/tasks", params={"search": "账号"})).json()
    capped = (await client.get("/tasks", params={"page_size": 100000})).json()

    assert everything["total"] == 7
    assert len(everything["items"]) == 7
    assert [row["name"] for row in page["items"]] == ["sync-2", "sync-1"]
    assert (page["total"], page["page"], page["page_size"]) == (7, 2, 2)
    assert [row["name"] for row in reports["items"]] == ["report"]
    assert [row["name"] for row in paused["items"]] == ["once"]
    assert [row["name"] for row in manual["items"]] == ["once"]
    assert [row["name"] for row in found["items"]] == ["sync-4-账号"]
    assert capped["page_size"] == 200


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"page": 0}, ["query", "page"]),
        ({"page": "x"}, ["query", "page"]),
        ({"page_size": -1}, ["query", "page_size"]),
        ({"status": "sleeping"}, ["query", "status"]),
        ({"sort": "color"}, ["query", "sort"]),
        ({"search": "a\x00b"}, ["query", "search"]),
    ],
)
async def test_list_refuses_bad_query_parameters(
    client: httpx.AsyncClient, params: dict[str, Any], loc: list[str]
) -> None:
    response = await client.get("/tasks", params=params)

    assert response.status_code == 422
    assert loc in _locs(response)


# ---------------------------------------------------------------- detail


async def test_detail_has_configuration_counters_lock_and_registry(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    response = await client.get(f"/tasks/{row.id}")

    assert response.status_code == 200
    detail = response.json()
    assert detail["name"] == "hourly"
    assert detail["next_run_at"] is not None
    assert (detail["run_count"], detail["success_count"], detail["failure_count"]) == (0, 0, 0)
    assert detail["locked"] is False
    assert detail["lock"] is None
    assert detail["last_execution"] is None
    assert detail["registered"]["name"] == "账号同步"


async def test_unknown_id_is_404_and_a_bad_id_is_422(client: httpx.AsyncClient) -> None:
    missing = await client.get("/tasks/999999")
    bad = await client.get("/tasks/abc")
    zero = await client.get("/tasks/0")

    assert missing.status_code == 404
    assert missing.json() == {"detail": "no schedule with id 999999"}
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["path", "id"]
    assert zero.status_code == 422


@pytest.mark.parametrize(
    "raw",
    ["9" * 5000, "%C2%B2", "%D9%A1", "99999999999999999999", "9223372036854775808", "-1", "1e3"],
)
async def test_an_odd_path_id_is_a_422_never_a_500(client: httpx.AsyncClient, raw: str) -> None:
    for path in (f"/tasks/{raw}", f"/executions/{raw}", f"/tasks/{raw}/executions"):
        answer = await client.get(path)
        assert answer.status_code == 422, (path[:40], answer.text[:200])
        assert answer.json()["detail"][0]["loc"][0] == "path"
    largest = await client.get("/tasks/9223372036854775807")  # int64's largest: a real id
    assert largest.status_code == 404


# ---------------------------------------------------------------- update


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_update_changes_only_the_fields_given_and_recomputes_next_run(
    client: httpx.AsyncClient, runtime: Runtime, method: str
) -> None:
    row = add_schedule(runtime, description="keep me")
    before = datetime.fromisoformat((await client.get(f"/tasks/{row.id}")).json()["next_run_at"])

    response = await client.request(method, f"/tasks/{row.id}", json={"interval_seconds": 60})

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["interval_seconds"] == 60
    assert updated["description"] == "keep me"
    assert updated["version"] == 2
    assert datetime.fromisoformat(updated["next_run_at"]) < before - timedelta(minutes=30)


async def test_update_validates_like_create(client: httpx.AsyncClient, runtime: Runtime) -> None:
    row = add_schedule(runtime)

    to_cron = await client.patch(f"/tasks/{row.id}", json={"task_type": "cron"})
    null_name = await client.patch(f"/tasks/{row.id}", json={"name": None})
    to_report = await client.patch(f"/tasks/{row.id}", json={"task_name": "dftest.report"})
    unknown = await client.patch(f"/tasks/{row.id}", json={"task_name": "dftest.zzz"})
    stale = await client.patch(f"/tasks/{row.id}", json={"name": "x", "expected_version": 9})
    missing = await client.patch("/tasks/424242", json={"name": "x"})

    assert to_cron.status_code == 422
    assert ["body", "cron_expression"] in _locs(to_cron)
    assert null_name.status_code == 422
    assert ["body", "name"] in _locs(null_name)
    assert to_report.status_code == 422
    assert ["body", "handler_kwargs", "days"] in _locs(to_report)
    assert unknown.status_code == 422
    assert ["body", "task_name"] in _locs(unknown)
    assert stale.status_code == 409
    assert missing.status_code == 404


async def test_update_with_an_empty_body_is_422(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime)
    response = await client.put(f"/tasks/{row.id}", content=b"")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


# ---------------------------------------------------------------- delete


async def test_delete_answers_204_then_404(client: httpx.AsyncClient, runtime: Runtime) -> None:
    row = add_schedule(runtime)

    first = await client.delete(f"/tasks/{row.id}")
    second = await client.delete(f"/tasks/{row.id}")

    assert first.status_code == 204
    assert first.content == b""
    assert second.status_code == 404


async def test_delete_of_a_system_task_is_403_with_a_message(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime, "maintenance", task_name="dftest.cleanup", is_system=True)
    response = await client.delete(f"/tasks/{row.id}")

    assert response.status_code == 403
    assert "system schedule" in response.json()["detail"]
    assert (await client.get(f"/tasks/{row.id}")).status_code == 200


async def test_a_system_task_may_change_only_when_it_runs_and_whether_it_is_paused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    row = add_schedule(runtime, "maintenance", task_name="dftest.cleanup", is_system=True)
    timing = await client.patch(
        f"/tasks/{row.id}", json={"interval_seconds": 120, "description": "every 2 min"}
    )
    paused = await client.post(f"/tasks/{row.id}/pause")
    resumed = await client.patch(f"/tasks/{row.id}", json={"status": "active"})
    assert (timing.status_code, paused.status_code, resumed.status_code) == (200, 200, 200)
    for change in (
        {"task_name": "dftest.sync_accounts"},
        {"handler_kwargs": {"x": 1}},
        {"name": "renamed"},
        {"overlap_policy": "allow"},
        {"task_type": "manual"},
    ):
        refused = await client.patch(f"/tasks/{row.id}", json=change)
        assert refused.status_code == 403, (change, refused.text)
        assert "system schedule" in refused.json()["detail"]
    unchanged = (await client.get(f"/tasks/{row.id}")).json()
    assert (unchanged["task_name"], unchanged["name"]) == ("dftest.cleanup", "maintenance")
    assert unchanged["interval_seconds"] == 120


# ---------------------------------------------------------------- audit


@pytest.mark.parametrize(
    "given", ["x" * 65, "a b", "id\u00e9", "<script>", "req;drop", "\u200bzero-width"]
)
async def test_an_odd_request_id_is_replaced_not_stored(
    client: httpx.AsyncClient, given: str
) -> None:
    created = await client.post(
        "/tasks", json=_cron(), headers={"X-Request-ID": given.encode("utf-8")}
    )
    assert created.status_code == 201, created.text
    echoed = created.headers["x-request-id"]
    assert echoed != given
    assert len(echoed) == 32
    assert int(echoed, 16) >= 0  # a fresh hex id
    [entry] = (await client.get("/audit")).json()["items"]
    assert entry["request_id"] == echoed


async def test_every_change_is_audited_with_before_and_after(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = (await client.post("/tasks", json=_cron())).json()
    await client.patch(f"/tasks/{created['id']}", json={"description": "changed"})
    await client.patch(f"/tasks/{created['id']}", json={"description": "changed"})  # no-op
    await client.delete(f"/tasks/{created['id']}", headers={"X-Request-ID": "req-42"})

    audit = (await client.get("/audit")).json()
    actions = [entry["action"] for entry in audit["items"]]
    assert actions == ["delete", "update", "create"]
    delete, update, create = audit["items"]
    assert create["before"] is None
    assert create["after"]["name"] == "nightly"
    assert update["before"]["description"] == ""
    assert update["after"]["description"] == "changed"
    assert delete["after"] is None
    assert delete["request_id"] == "req-42"
    assert {entry["principal"] for entry in audit["items"]} == {create["principal"]}
    assert create["principal"] == "key:1"  # by position: nothing of the key itself
    assert "test-full-key" not in audit.__repr__()
    filtered = (await client.get("/audit", params={"action": "update", "count": "true"})).json()
    assert filtered["total"] == 1
    assert len(filtered["items"]) == 1


async def test_exclusions_are_stored_previewed_and_refused_naming_the_window(
    client: httpx.AsyncClient,
) -> None:
    windows = [
        {"name": "weekends", "cron": "0 0 * * 6", "duration_seconds": 172800},
        {"name": "christmas", "start": "2030-12-24T00:00", "end": "2030-12-27T00:00"},
        {"dates": ["2031-01-01"]},
    ]
    trigger = {"task_type": "cron", "cron_expression": "0 9 * * *", "timezone": "Asia/Shanghai"}
    preview = await client.post(
        "/schedules/preview",
        json={**trigger, "exclusions": windows[:1], "count": 5},
    )
    created = await client.post(
        "/tasks",
        json={
            "name": "weekdays",
            "task_name": "dftest.sync_accounts",
            **trigger,
            "exclusions": windows,
        },
    )
    bad = await client.post(
        "/tasks",
        json={
            "name": "bad",
            "task_name": "dftest.sync_accounts",
            **trigger,
            "exclusions": [{"start": "2030-12-24T00:00", "end": "yesterday"}],
        },
    )
    shape = await client.post(
        "/schedules/preview", json={**trigger, "exclusions": [{"cron": "0 0 * * 6"}]}
    )
    extra = await client.post(
        "/schedules/preview", json={**trigger, "exclusions": [{"every": "sunday"}]}
    )

    assert preview.status_code == 200, preview.text
    fires = [datetime.fromisoformat(t) for t in preview.json()["fire_times"]]
    assert len(fires) == 5
    assert all(t.weekday() < 5 for t in fires), "no Saturday or Sunday"
    excluded = preview.json()["excluded"]
    assert excluded, "the weekend's slots are listed"
    assert {e["window"] for e in excluded} == {"weekends"}
    assert all(datetime.fromisoformat(e["at"]).weekday() >= 5 for e in excluded)
    assert created.status_code == 201, created.text
    assert created.json()["exclusions"] == windows
    assert datetime.fromisoformat(created.json()["next_run_at"]).weekday() < 5
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "exclusions"]
    assert "exclusions[0]: end is not an ISO 8601" in bad.json()["detail"][0]["msg"]
    assert shape.status_code == 422
    assert "exclusions[0]: a window has start and end" in shape.text
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"][:3] == ["body", "exclusions", 0]
    cleared = await client.patch(f"/tasks/{created.json()['id']}", json={"exclusions": None})
    assert cleared.json()["exclusions"] is None
    once = {
        "name": "once",
        "task_name": "dftest.sync_accounts",
        "task_type": "date",
        "run_at": "2031-01-01T09:00:00+08:00",
        "timezone": "Asia/Shanghai",
    }
    hidden = await client.post("/tasks", json={**once, "exclusions": [{"dates": ["2031-01-01"]}]})
    assert hidden.status_code == 422
    assert hidden.json()["detail"][0]["loc"] == ["body", "exclusions"]
    assert "no slot to fire at" in hidden.json()["detail"][0]["msg"]
    far = await client.post("/tasks", json={**once, "exclusions": [{"dates": ["9999-12-31"]}]})
    assert far.status_code == 422, "never a 500"
