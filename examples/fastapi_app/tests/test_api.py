"""Schedules created through the mounted API are validated against the registered params."""

from __future__ import annotations

from typing import Any

import pytest

CLEANUP = "dataforge.cleanup_expired"


def _create(client: Any, **handler_kwargs: Any) -> Any:
    return client.post(
        "/tasks",
        json={
            "name": "nightly-cleanup",
            "task_type": "cron",
            "cron_expression": "0 3 * * *",
            "timezone": "Asia/Shanghai",
            "task_name": CLEANUP,
            "handler_kwargs": handler_kwargs,
        },
    )


@pytest.mark.parametrize(
    ("handler_kwargs", "param"),
    [
        pytest.param({}, "days", id="missing"),
        pytest.param({"days": "a week"}, "days", id="not-an-int"),
        pytest.param({"days": 7.5}, "days", id="fractional"),
        pytest.param({"days": 7, "dry_run": "perhaps"}, "dry_run", id="not-a-bool"),
        pytest.param({"days": 7, "dayz": 1}, "dayz", id="unknown-param"),
    ],
)
def test_bad_cleanup_kwargs_are_refused_naming_the_param(
    dataforge_api_client: Any, handler_kwargs: dict[str, Any], param: str
) -> None:
    response = _create(dataforge_api_client, **handler_kwargs)

    assert response.status_code == 422
    assert ["body", "handler_kwargs", param] in [e["loc"] for e in response.json()["detail"]]
    assert dataforge_api_client.get("/tasks").json()["items"] == []


def test_a_misspelled_task_name_is_refused_with_a_suggestion(dataforge_api_client: Any) -> None:
    response = dataforge_api_client.post(
        "/tasks",
        json={"name": "typo", "task_type": "manual", "task_name": "dataforge.cleanup_expird"},
    )

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "task_name"]
    assert "dataforge.cleanup_expired" in error["msg"]


def test_a_valid_cleanup_schedule_is_stored_coerced_and_runs_now(
    dataforge_api_client: Any, dataforge_run_task: Any
) -> None:
    created = _create(dataforge_api_client, days="7")
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["handler_kwargs"] == {"days": 7}
    assert schedule["next_run_at"] is not None

    accepted = dataforge_api_client.post(f"/tasks/{schedule['id']}/run")
    assert accepted.status_code == 202
    row = dataforge_run_task.wait(accepted.json()["task_id"])

    assert row.status.value == "success"
    assert row.kwargs == {"days": 7, "dry_run": False, "scheduled_task_id": schedule["id"]}
    executions = dataforge_api_client.get(f"/tasks/{schedule['id']}/executions").json()
    assert [e["status"] for e in executions["items"]] == ["success"]
