"""Run control on a real prefork worker: a failed run run again (``control.rerun``,
behind ``POST /executions/{id}/rerun`` and ``dataforge-scheduler rerun``).

The worker is ``apps.outage_app``'s; ``ot.flaky`` fails when its kwargs say so and
otherwise appends its Celery task id to the proof file, so a rerun that succeeds is
seen to have run its body.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.apps.celery_probe import sender
from tests.integration.cluster import Cluster, running_cluster
from tests.integration.procs import wait_until

from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.control import rerun, run_now
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.errors import ConflictError
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

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
