"""A host project's own tests, written against the plugin's fixtures, run by pytester.

The generated tests are the plugin's specification as a host sees it: every fixture
is there and prefixed; the factory makes valid schedules and refuses bad ones; a run
goes through lock, history and log for success, failure and a skipped (locked) run;
the scheduler fires a 02:00 Asia/Shanghai cron and an interval grid on a manual clock;
the API client lists and runs tasks; and the configuration fixtures can be overridden.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from tests.plugin.conftest import outcome_report

pytestmark = pytest.mark.slow

HOST_TESTS = """
import time
from datetime import UTC, datetime, timedelta

import pytest

from dataforge_scheduler import (
    ExecutionStatus,
    ExecutionTrigger,
    InvalidParams,
    InvalidSchedule,
    UnknownTask,
    runtime_for,
)
from dataforge_scheduler.core.clock import ManualClock


@pytest.fixture
def dataforge_clock():
    # a fixed start, so slot times can be written out
    return ManualClock(datetime(2024, 3, 1, 0, 0, tzinfo=UTC))


def test_the_host_app_is_set_up_with_the_test_settings(dataforge_runtime, dataforge_settings):
    from hostapp import celery_app, runtime as import_time_runtime

    assert runtime_for(celery_app) is dataforge_runtime
    assert dataforge_runtime is not import_time_runtime
    assert dataforge_runtime.settings is dataforge_settings
    assert dataforge_settings.database_url.startswith(("sqlite:///", "postgresql"))
    assert celery_app.conf.broker_url == "memory://"
    assert celery_app.conf.timezone == "UTC"


def test_factory_makes_valid_schedules(dataforge_schedule_factory, dataforge_clock):
    first = dataforge_schedule_factory.make(task_name="hostapp.sync")
    second = dataforge_schedule_factory.make(
        task_name="hostapp.sync", handler_kwargs={"count": "3"}
    )
    assert first.name != second.name
    assert first.task_type.value == "interval"
    assert first.next_run_at == dataforge_clock.now() + timedelta(seconds=60)
    assert second.handler_kwargs == {"count": 3}
    with pytest.raises(InvalidSchedule) as bad:
        dataforge_schedule_factory.make(task_name="hostapp.sync", interval_seconds=0)
    assert bad.value.field == "interval_seconds"
    with pytest.raises(UnknownTask):
        dataforge_schedule_factory.make(task_name="hostapp.snyc")
    with pytest.raises(InvalidParams):
        dataforge_schedule_factory.make(
            task_name="hostapp.sync", handler_kwargs={"count": "many"}
        )
    planted = dataforge_schedule_factory.make(task_name="hostapp.snyc", validate=False)
    assert planted.task_name == "hostapp.snyc"


def test_a_successful_run(dataforge_run_task, dataforge_schedule_factory):
    schedule = dataforge_schedule_factory.make(
        task_name="hostapp.sync", handler_kwargs={"count": 2}
    )
    row = dataforge_run_task(schedule)
    assert row.status is ExecutionStatus.SUCCESS
    assert row.trigger is ExecutionTrigger.MANUAL
    assert row.scheduled_task_id == schedule.id
    assert row.result == {"synced_count": 2}
    assert row.log_output.splitlines() == ["开始同步账号... 2", "done"]
    assert row.worker_hostname
    assert dataforge_run_task.lock(schedule) is None
    stored = dataforge_schedule_factory.get(schedule)
    assert (stored.run_count, stored.success_count, stored.failure_count) == (1, 1, 0)
    assert stored.last_status is ExecutionStatus.SUCCESS
    again = dataforge_run_task(schedule, count=5)
    assert again.result == {"synced_count": 5}


def test_a_failed_run(dataforge_run_task, dataforge_schedule_factory):
    schedule = dataforge_schedule_factory.make(task_name="hostapp.boom", task_type="manual")
    row = dataforge_run_task(schedule)
    assert row.status is ExecutionStatus.FAILED
    assert row.error == "RuntimeError: kaput"
    assert "RuntimeError" in row.traceback
    assert row.log_output == "about to fail"
    assert dataforge_run_task.lock(schedule) is None
    stored = dataforge_schedule_factory.get(schedule)
    assert (stored.run_count, stored.success_count, stored.failure_count) == (1, 0, 1)


def test_a_failed_run_run_again(dataforge_run_task, dataforge_schedule_factory):
    schedule = dataforge_schedule_factory.make(
        task_name="hostapp.sync", handler_kwargs={"count": 2}
    )
    first = dataforge_run_task(schedule)
    again = dataforge_run_task.rerun(first, count=6)
    assert again.status is ExecutionStatus.SUCCESS
    assert again.rerun_of == first.id
    assert again.id != first.id
    assert again.trigger is ExecutionTrigger.MANUAL
    assert again.result == {"synced_count": 6}
    assert again.kwargs == {"count": 6, "scheduled_task_id": schedule.id}
    failed = dataforge_run_task(dataforge_schedule_factory.make(
        task_name="hostapp.boom", task_type="manual"
    ))
    retried = dataforge_run_task.rerun(failed.id)
    assert (retried.rerun_of, retried.status) == (failed.id, ExecutionStatus.FAILED)
    assert dataforge_schedule_factory.get(schedule).run_count == 2


def test_a_schedule_pauses_itself_after_failures(
    dataforge_run_task, dataforge_schedule_factory
):
    schedule = dataforge_schedule_factory.make(
        task_name="hostapp.boom", task_type="manual", pause_after_failures=2
    )
    dataforge_run_task(schedule)
    assert dataforge_schedule_factory.get(schedule).failure_streak == 1
    last = dataforge_run_task(schedule)
    stored = dataforge_schedule_factory.get(schedule)
    assert stored.status.value == "paused"
    assert stored.pause_note == (
        f"paused after 2 failed or lost runs in a row; the last, execution {last.id}: "
        "RuntimeError: kaput"
    )


def test_a_locked_run_is_skipped(dataforge_run_task, dataforge_schedule_factory):
    schedule = dataforge_schedule_factory.make(task_name="hostapp.sync")
    with dataforge_run_task.holding_lock(schedule) as holder:
        row = dataforge_run_task(schedule)
        assert dataforge_run_task.lock(schedule).celery_task_id == holder.celery_task_id
    assert row.status is ExecutionStatus.SKIPPED
    assert holder.celery_task_id in row.error
    assert row.result["skipped"] == "locked"
    assert not row.log_output
    assert dataforge_run_task.lock(schedule) is None
    assert dataforge_schedule_factory.get(schedule).run_count == 0
    assert dataforge_run_task(schedule).status is ExecutionStatus.SUCCESS


def test_a_run_by_task_name(dataforge_run_task):
    row = dataforge_run_task("hostapp.sync", count=4)
    assert row.scheduled_task_id is None
    assert row.result == {"synced_count": 4}
    with pytest.raises(UnknownTask):
        dataforge_run_task("hostapp.missing")


def test_a_task_sent_by_the_code_under_test_runs_on_the_worker(
    dataforge_worker, dataforge_run_task
):
    from hostapp import sync_accounts

    result = sync_accounts.delay(count=6)
    row = dataforge_run_task.wait(result.id)
    assert row.trigger is ExecutionTrigger.EXTERNAL
    assert row.result == {"synced_count": 6}
    assert result.get(timeout=5) == {"synced_count": 6}
    assert dataforge_worker.running


def test_a_cron_fires_at_two_in_shanghai(dataforge_scheduler, dataforge_schedule_factory):
    schedule = dataforge_schedule_factory.make(
        task_name="hostapp.sync",
        task_type="cron",
        cron_expression="0 2 * * *",
        timezone="Asia/Shanghai",
    )
    assert dataforge_scheduler.tick() == []
    sent = dataforge_scheduler.advance(timedelta(days=3))
    assert [s.slot_in("Asia/Shanghai").strftime("%m-%d %H:%M") for s in sent] == [
        "03-02 02:00", "03-03 02:00", "03-04 02:00",
    ]
    assert sent[0].slot == datetime(2024, 3, 1, 18, 0, tzinfo=UTC)  # 08:00 there at start
    assert {s.task_name for s in sent} == {"hostapp.sync"}
    assert {s.scheduled_task_id for s in sent} == {schedule.id}
    assert dataforge_scheduler.sent == sent


def test_an_interval_grid_without_missed_slots(dataforge_scheduler, dataforge_schedule_factory):
    start = dataforge_scheduler.clock.now()
    dataforge_schedule_factory.make(task_name="hostapp.sync", interval_seconds=300)
    sent = dataforge_scheduler.advance(3600)
    assert [s.slot for s in sent] == [start + timedelta(seconds=300 * k) for k in range(1, 13)]
    assert dataforge_scheduler.clock.now() == start + timedelta(hours=1)
    assert dataforge_scheduler.advance(299) == []
    assert len(dataforge_scheduler.advance(1)) == 1


def test_max_runs_completes_the_schedule(dataforge_scheduler, dataforge_schedule_factory):
    schedule = dataforge_schedule_factory.make(
        task_name="hostapp.sync", interval_seconds=60, max_runs=2
    )
    assert len(dataforge_scheduler.advance(600)) == 2
    stored = dataforge_schedule_factory.get(schedule)
    assert (stored.status.value, stored.max_runs) == ("completed", 0)


def test_slots_in_an_exclusion_window_are_not_sent(
    dataforge_scheduler, dataforge_schedule_factory
):
    start = dataforge_scheduler.clock.now()
    dataforge_schedule_factory.make(
        task_name="hostapp.sync",
        interval_seconds=300,
        exclusions=[{"name": "freeze", "start": "2024-03-01T00:10", "end": "2024-03-01T00:20"}],
    )
    sent = dataforge_scheduler.advance(1800)
    assert [(s.slot - start).seconds // 60 for s in sent] == [5, 20, 25, 30]


def test_a_run_early_skips_the_next_slot(
    dataforge_scheduler, dataforge_schedule_factory, dataforge_run_task
):
    start = dataforge_scheduler.clock.now()
    schedule = dataforge_schedule_factory.make(task_name="hostapp.sync", interval_seconds=300)
    early = dataforge_run_task.run_early(schedule, count=3)
    assert early.result == {"synced_count": 3}
    sent = dataforge_scheduler.advance(900)
    after = [start + timedelta(seconds=600), start + timedelta(seconds=900)]
    assert [s.slot for s in sent] == after


def test_a_backfill_runs_its_past_slots_in_order(
    dataforge_clock, dataforge_schedule_factory, dataforge_run_task
):
    now = dataforge_clock.now()
    schedule = dataforge_schedule_factory.make(task_name="hostapp.sync", interval_seconds=3600)
    start = schedule.created_at - timedelta(hours=3)
    dataforge_clock.set(now + timedelta(hours=4))
    rows = dataforge_run_task.backfill(schedule, start=start, end=now + timedelta(hours=3))
    assert [row.scheduled_for for row in rows] == [now + timedelta(hours=h) for h in (1, 2)]
    assert {(row.status, row.trigger) for row in rows} == {
        (ExecutionStatus.SUCCESS, ExecutionTrigger.BACKFILL)
    }
    assert rows[0].finished_at <= rows[1].started_at


def test_the_api_client_lists_and_runs_tasks(
    dataforge_api_client, dataforge_schedule_factory, dataforge_run_task
):
    schedule = dataforge_schedule_factory.make(task_name="hostapp.sync")
    listed = dataforge_api_client.get("/tasks")
    assert listed.status_code == 200, listed.text
    assert [item["name"] for item in listed.json()["items"]] == [schedule.name]
    registered = dataforge_api_client.get("/tasks/registered").json()
    assert "hostapp.sync" in str(registered)
    anonymous = dataforge_api_client.get("/tasks", headers={"X-API-Key": "wrong"})
    assert anonymous.status_code == 401
    accepted = dataforge_api_client.post(f"/tasks/{schedule.id}/run", json={"kwargs": {"count": 7}})
    assert accepted.status_code == 202, accepted.text
    row = dataforge_run_task.wait(accepted.json()["task_id"])
    assert row.result == {"synced_count": 7}
    detail = dataforge_api_client.get(f"/executions/{row.id}").json()
    assert detail["status"] == "success"
    assert "开始同步账号... 7" in detail["log"]
"""

OVERRIDES = """
from datetime import UTC, datetime, timedelta

import pytest

from dataforge_scheduler.core.clock import ManualClock


@pytest.fixture
def dataforge_settings_overrides():
    return {"celery_timezone": "Asia/Shanghai", "task_name_prefix": "hostapp.",
            "lock_ttl_seconds": 120}


@pytest.fixture
def dataforge_clock():
    return ManualClock(datetime(2024, 6, 1, tzinfo=UTC))


def test_overrides_reach_the_settings_and_the_app(dataforge_runtime, dataforge_celery_app):
    settings = dataforge_runtime.settings
    assert settings.celery_timezone == "Asia/Shanghai"
    assert settings.lock_ttl_seconds == 120
    assert settings.celery_broker_url == "memory://"
    assert dataforge_celery_app.conf.timezone == "Asia/Shanghai"


def test_a_cron_without_timezone_follows_the_overridden_one(
    dataforge_scheduler, dataforge_schedule_factory
):
    dataforge_schedule_factory.make(
        task_name="hostapp.sync", task_type="cron", cron_expression="30 8 * * *"
    )
    sent = dataforge_scheduler.advance(timedelta(days=1))
    assert [s.slot for s in sent] == [datetime(2024, 6, 1, 0, 30, tzinfo=UTC)]


def test_tasks_registered_at_import_still_run(dataforge_run_task):
    assert dataforge_run_task("hostapp.sync").result == {"synced_count": 1}
"""


def test_a_host_project_uses_every_fixture_and_overrides_them(
    host_project: pytest.Pytester,
) -> None:
    # one session; the module with overrides runs first (files run in name order) and
    # must not leak them into the next one, which asserts the defaults
    host_project.makepyfile(
        test_a_overrides=textwrap.dedent(OVERRIDES), test_host=textwrap.dedent(HOST_TESTS)
    )
    result = host_project.runpytest_subprocess("-q")
    result.assert_outcomes(passed=19)
    assert "Traceback" not in result.stderr.str(), outcome_report(result)


def test_every_plugin_fixture_is_prefixed(host_project: pytest.Pytester) -> None:
    host_project.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = host_project.runpytest_subprocess("--fixtures", "-q")
    text = result.stdout.str()
    section = re.search(
        r"fixtures defined from dataforge_scheduler\.testing[^\n]*\n(.*?)(?:\n-+ |\Z)", text, re.S
    )
    assert section is not None, text[-3000:]
    names = re.findall(r"^(\w+)(?: \[\w+ scope\])? -- ", section.group(1), re.M)
    expected = {
        "dataforge_api_client",
        "dataforge_celery_app",
        "dataforge_clock",
        "dataforge_database_url",
        "dataforge_redis_url",
        "dataforge_run_task",
        "dataforge_runtime",
        "dataforge_schedule_factory",
        "dataforge_scheduler",
        "dataforge_settings",
        "dataforge_settings_overrides",
        "dataforge_worker",
        "dataforge_worker_parameters",
    }
    assert expected <= set(names), section.group(1)
    assert all(name.startswith(("dataforge_", "_dataforge_")) for name in names), names
