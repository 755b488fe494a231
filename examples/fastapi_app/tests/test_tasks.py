"""The service's tasks, run on the plugin's in-process worker through the full path:
lock, run history, the log written with ``task_log``, and the schedule's counters."""

from __future__ import annotations

from typing import Any

from dataforge_scheduler import ExecutionStatus, ExecutionTrigger

SYNC = "dataforge.sync_accounts"
CLEANUP = "dataforge.cleanup_expired"


def test_the_registered_tasks_are_listed_by_the_api(dataforge_api_client: Any) -> None:
    response = dataforge_api_client.get("/tasks/registered")

    assert response.status_code == 200
    tasks = response.json()
    assert {SYNC, CLEANUP} <= set(tasks)
    assert tasks[SYNC]["name"] == "账号同步"
    assert tasks[SYNC]["category"] == "sync"
    assert [p["name"] for p in tasks[CLEANUP]["params"]] == ["days", "dry_run"]
    assert tasks[CLEANUP]["params"][0]["required"] is True


def test_a_sync_run_logs_each_batch_and_succeeds(
    dataforge_run_task: Any, dataforge_schedule_factory: Any
) -> None:
    schedule = dataforge_schedule_factory.make(task_name=SYNC, handler_kwargs={"count": 5})

    row = dataforge_run_task(schedule)

    assert row.status is ExecutionStatus.SUCCESS
    assert row.trigger is ExecutionTrigger.MANUAL
    assert row.result == {"synced_count": 5, "batches": 3}  # TEST_BATCH_SIZE is 2
    assert row.log_output.splitlines() == [
        "开始同步账号... 5",
        "batch 1: 2/5 synced",
        "batch 2: 4/5 synced",
        "batch 3: 5/5 synced",
        "同步完成",
    ]
    assert dataforge_run_task.lock(schedule) is None  # released
    stored = dataforge_schedule_factory.get(schedule)
    assert (stored.success_count, stored.failure_count) == (1, 0)


def test_a_failing_sync_run_is_recorded_with_its_error(
    dataforge_run_task: Any, dataforge_schedule_factory: Any
) -> None:
    schedule = dataforge_schedule_factory.make(task_name=SYNC)

    row = dataforge_run_task(schedule, count=-1)

    assert row.status is ExecutionStatus.FAILED
    assert row.error == "ValueError: count must be 0 or more, got -1"
    assert "raise ValueError" in row.traceback
    assert dataforge_run_task.lock(schedule) is None
    assert dataforge_schedule_factory.get(schedule).failure_count == 1


def test_a_sync_run_is_skipped_while_another_holds_the_lock(
    dataforge_run_task: Any, dataforge_schedule_factory: Any
) -> None:
    schedule = dataforge_schedule_factory.make(task_name=SYNC)

    with dataforge_run_task.holding_lock(schedule):
        row = dataforge_run_task(schedule)

    assert row.status is ExecutionStatus.SKIPPED
    assert row.result["skipped"] == "locked"


def test_the_cleanup_task_runs_with_its_required_param(dataforge_run_task: Any) -> None:
    row = dataforge_run_task(CLEANUP, days=30, dry_run=True)

    assert row.status is ExecutionStatus.SUCCESS
    assert row.result["expired"] == 0
    assert row.result["deleted"] is False
    assert "days=30, dry_run=True" in row.log_output
