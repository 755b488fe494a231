"""Run control on a real prefork worker (and beat): a failed run run again
(``control.rerun``, behind ``POST /executions/{id}/rerun`` and ``dataforge-scheduler
rerun``), and a schedule that pauses itself after ``pause_after_failures`` failures.

The worker is ``apps.outage_app``'s; ``ot.flaky`` fails when its kwargs say so and
otherwise appends its Celery task id to the proof file, so a rerun that succeeds is
seen to have run its body.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.integration.apps.celery_probe import sender
from tests.integration.cluster import OPEN, Cluster, running_cluster
from tests.integration.procs import wait_until

from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.control import rerun, run_now
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger, TaskStatus
from dataforge_scheduler.errors import ConflictError
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

FLAKY = "ot.flaky"


@pytest.fixture
def cluster(
    pg: Any, pg_url: str, redis_url: str, redis_client: Any, key_prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    with running_cluster(pg, pg_url, redis_url, key_prefix, tmp_path) as running:
        app = sender(running.env)
        running.runtime.dispatcher = CeleryDispatcher(app)
        try:
            yield running
        finally:
            app.close()


def _ended(cluster: Cluster, execution_id: int) -> TaskExecution:
    return wait_until(
        lambda: (row := cluster.execution(execution_id)).status.finished and row,
        timeout=30,
        message=f"execution {execution_id} to end",
    )


def test_a_failed_run_run_again_with_an_override_succeeds_on_its_schedule(
    cluster: Cluster,
) -> None:
    with cluster.runtime.session() as session:
        schedule = store.create_schedule(
            session,
            {
                "name": "flaky",
                "task_type": "manual",
                "task_name": FLAKY,
                "handler_kwargs": {"fail": True},
            },
            now=utcnow(),
            default_timezone="UTC",
        )
        session.commit()
        schedule_id = schedule.id
    cluster.worker.start().wait_ready()

    first = run_now(cluster.runtime, schedule_id=schedule_id, validate=False)
    failed = _ended(cluster, first.run.execution_id)
    assert failed.status is ExecutionStatus.FAILED, failed.error
    assert failed.error == "RuntimeError: told to fail"

    same = rerun(cluster.runtime, failed.id, validate=False)
    again = _ended(cluster, same.run.execution_id)
    fixed = rerun(cluster.runtime, failed.id, kwargs={"fail": False}, validate=False)
    good = _ended(cluster, fixed.run.execution_id)

    assert (again.status, again.rerun_of, again.kwargs) == (
        ExecutionStatus.FAILED,
        failed.id,
        {"fail": True, "scheduled_task_id": schedule_id},
    )
    assert (good.status, good.rerun_of, good.trigger) == (
        ExecutionStatus.SUCCESS,
        failed.id,
        ExecutionTrigger.MANUAL,
    )
    assert good.scheduled_task_id == schedule_id
    assert good.log_output == f"flaky working {good.celery_task_id}"
    assert cluster.bodies() == [good.celery_task_id]
    with cluster.runtime.session() as session:
        assert store.rerun_ids(session, failed.id) == [again.id, good.id]
        counted = store.get_schedule(session, schedule_id)
        assert (counted.run_count, counted.success_count, counted.failure_count) == (3, 1, 2)
        assert counted.last_status is ExecutionStatus.SUCCESS
    assert cluster.runtime.locks.list() == [], "each run freed the schedule's lock"


def test_a_run_still_going_is_not_run_again(cluster: Cluster) -> None:
    cluster.worker.start().wait_ready()
    sent = run_now(cluster.runtime, task_name="ot.tick", kwargs={"work": 5}, validate=False)
    wait_until(
        lambda: cluster.execution(sent.run.execution_id).started_at is not None,
        timeout=30,
        message="the run to start",
    )

    with pytest.raises(ConflictError, match=r"has not ended \(running\)"):
        rerun(cluster.runtime, sent.run.execution_id, validate=False)

    done = _ended(cluster, sent.run.execution_id)
    assert done.status is ExecutionStatus.SUCCESS
    with cluster.runtime.session() as session:
        assert store.rerun_ids(session, done.id) == []


def test_a_schedule_that_keeps_failing_pauses_itself_and_its_beat_stops_sending(
    cluster: Cluster,
) -> None:
    schedule_id = cluster.schedule(
        task_name=FLAKY,
        interval_seconds=1,
        handler_kwargs={"fail": True},
        pause_after_failures=2,
    )
    cluster.start()

    def paused() -> ScheduledTask | None:
        with cluster.runtime.session() as session:
            row = store.get_schedule(session, schedule_id)
            session.expunge(row)
        return row if row.status is TaskStatus.PAUSED else None

    row = wait_until(paused, timeout=60, interval=0.2, message="the schedule to pause itself")
    assert row.next_run_at is None
    assert row.failure_streak >= 2
    assert row.pause_note is not None
    assert row.pause_note.startswith("paused after 2 failed or lost runs in a row")
    assert row.pause_note.endswith(": RuntimeError: told to fail"), row.pause_note

    def settled() -> list[TaskExecution] | None:
        rows = cluster.rows()
        return None if any(r.status in OPEN for r in rows) else rows

    before = wait_until(settled, timeout=30, message="the runs sent before the pause to end")
    time.sleep(3)  # three of its slots: none is claimed while it is paused
    assert len(cluster.rows()) == len(before)
    failed = [r for r in before if r.status is ExecutionStatus.FAILED]
    assert len(failed) >= 2
    named = int(row.pause_note.split("the last, execution ")[1].split(":")[0])
    assert named in {r.id for r in failed}, "the note names the failed run that paused it"

    with cluster.runtime.session() as session:
        store.resume_schedule(session, schedule_id, now=utcnow(), default_timezone="UTC")
        store.update_schedule(
            session,
            schedule_id,
            {"handler_kwargs": {"fail": False}},
            now=utcnow(),
            default_timezone="UTC",
        )
        session.commit()
    wait_until(
        lambda: any(r.status is ExecutionStatus.SUCCESS for r in cluster.rows()),
        timeout=30,
        message="a run after the resume",
    )
    with cluster.runtime.session() as session:
        resumed = store.get_schedule(session, schedule_id)
        assert (resumed.status, resumed.failure_streak, resumed.pause_note) == (
            TaskStatus.ACTIVE,
            0,
            None,
        )


def test_a_run_early_takes_the_next_slot_and_the_beat_sends_the_ones_after(
    cluster: Cluster,
) -> None:
    schedule_id = cluster.schedule(interval_seconds=2, handler_kwargs={"work": 0.1})
    cluster.start()
    wait_until(
        lambda: any(r.status is ExecutionStatus.SUCCESS for r in cluster.rows()),
        timeout=30,
        message="a first scheduled run",
    )

    early = run_now(cluster.runtime, schedule_id=schedule_id, validate=False, skip_next=True)
    slot = early.skipped_slot
    assert slot is not None

    later = wait_until(
        lambda: [
            r
            for r in cluster.rows()
            if r.scheduled_for is not None
            and r.scheduled_for > slot
            and r.status is ExecutionStatus.SUCCESS
        ],
        timeout=30,
        message="a slot after the skipped one to run",
    )
    assert later
    rows = {r.scheduled_for: r for r in cluster.rows()}
    skipped = rows[slot]
    assert skipped.status is ExecutionStatus.SKIPPED
    assert skipped.started_at is None, "the skipped slot was never sent"
    assert skipped.error == (
        f"ran early: run now (execution {early.run.execution_id}) took this slot"
    )
    assert skipped.celery_task_id not in cluster.bodies()
    assert cluster.execution(early.run.execution_id).status is ExecutionStatus.SUCCESS


def test_a_schedule_with_max_runs_runs_that_many_times_and_completes(cluster: Cluster) -> None:
    schedule_id = cluster.schedule(interval_seconds=1, handler_kwargs={"work": 0.05}, max_runs=2)
    cluster.start()

    def completed() -> ScheduledTask | None:
        with cluster.runtime.session() as session:
            row = store.get_schedule(session, schedule_id)
            session.expunge(row)
        return row if row.status is TaskStatus.COMPLETED else None

    row = wait_until(completed, timeout=30, interval=0.2, message="the schedule to complete")
    assert (row.max_runs, row.next_run_at) == (0, None)
    claimed = cluster.rows()
    time.sleep(2.5)  # two more of its slots: none is claimed
    assert len(cluster.rows()) == len(claimed)
    # slots the beat found already late when it started are recorded missed: no run
    runs = [r for r in claimed if r.status is not ExecutionStatus.MISSED]
    assert len(runs) == 2
    wait_until(
        lambda: all(
            r.status in (ExecutionStatus.SUCCESS, ExecutionStatus.MISSED) for r in cluster.rows()
        ),
        timeout=30,
        message="both runs to end",
    )
    assert sorted(cluster.bodies()) == sorted(r.celery_task_id for r in runs)


def test_slots_inside_an_exclusion_window_are_never_claimed(cluster: Cluster) -> None:
    opens = utcnow().replace(microsecond=0) + timedelta(seconds=8)  # the beat is up by then
    closes = opens + timedelta(seconds=4)
    window = {"name": "freeze", "start": opens.isoformat(), "end": closes.isoformat()}
    schedule_id = cluster.schedule(
        interval_seconds=1, handler_kwargs={"work": 0.05}, exclusions=[window]
    )
    cluster.start()

    wait_until(
        lambda: any(
            r.scheduled_for is not None
            and r.scheduled_for >= closes
            and r.status is ExecutionStatus.SUCCESS
            for r in cluster.rows()
        ),
        timeout=40,
        message="a slot after the window to run",
    )
    slots = [r.scheduled_for for r in cluster.rows() if r.scheduled_for is not None]
    assert not [s for s in slots if opens <= s < closes], slots
    assert any(s < opens for s in slots), "slots before the window were claimed"
    with cluster.runtime.session() as session:
        assert store.get_schedule(session, schedule_id).exclusions == [window]
