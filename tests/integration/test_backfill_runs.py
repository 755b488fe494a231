"""A backfill on a real prefork worker (two processes) and beat: the slots run one after
another in slot order, never two at once, each seeing its own past slot in its run
context; cancelling the backfill revokes the slots still waiting while the one going
ends as it would.

``ot.slot`` appends ``<celery id>,<trigger>,<slot>`` to the proof file from inside its
body, so what the run context said is read from the body itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.integration.cluster import OPEN, Cluster, running_cluster
from tests.integration.procs import wait_until

from dataforge_scheduler.control import backfill, cancel_backfill
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def cluster(
    pg: Any, pg_url: str, redis_url: str, redis_client: Any, key_prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    with running_cluster(pg, pg_url, redis_url, key_prefix, tmp_path) as running:
        yield running


def _daily(cluster: Cluster, work: float) -> tuple[int, datetime]:
    """A daily schedule at 03:00 UTC (its own slots are days apart), and the start of
    today."""
    schedule_id = cluster.schedule(
        task_type="cron",
        cron_expression="0 3 * * *",
        task_name="ot.slot",
        handler_kwargs={"work": work},
    )
    return schedule_id, utcnow().replace(hour=0, minute=0, second=0, microsecond=0)


def _backfilled(cluster: Cluster) -> list[TaskExecution]:
    return [r for r in cluster.rows() if r.trigger is ExecutionTrigger.BACKFILL]


def test_a_backfill_runs_its_slots_one_after_another_in_slot_order(cluster: Cluster) -> None:
    schedule_id, today = _daily(cluster, work=0.4)
    cluster.start()

    done = backfill(cluster.runtime, schedule_id, start=today - timedelta(days=5), end=today)
    slots = [slot.scheduled_for for slot in done.created]
    assert slots == [today - timedelta(days=d, hours=-3) for d in (5, 4, 3, 2, 1)]

    def ended() -> list[TaskExecution] | None:
        rows = _backfilled(cluster)
        return None if any(r.status in OPEN for r in rows) else rows

    try:
        rows = wait_until(ended, timeout=60, interval=0.3, message="the backfill to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.output()}") from None
    assert [(r.scheduled_for, r.status) for r in rows] == [
        (slot, ExecutionStatus.SUCCESS) for slot in slots
    ]
    for before, after in itertools.pairwise(rows):
        assert before.finished_at is not None
        assert after.started_at is not None
        assert after.sent_at is not None
        assert after.started_at >= before.finished_at, "two backfill runs overlapped"
        assert after.sent_at >= before.finished_at, "sent before the run ahead ended: a burst"
    proof = [line.split(",") for line in cluster.bodies()]
    assert proof == [[r.celery_task_id, "backfill", r.scheduled_for.isoformat()] for r in rows], (
        "each body ran once, in slot order, seeing its own slot"
    )
    with cluster.runtime.session() as session:
        schedule = store.get_schedule(session, schedule_id)
        assert (schedule.run_count, schedule.success_count) == (5, 5)
    assert cluster.runtime.locks.list() == []


def test_cancelling_a_backfill_revokes_the_slots_still_waiting(cluster: Cluster) -> None:
    schedule_id, today = _daily(cluster, work=3)
    cluster.start()
    backfill(cluster.runtime, schedule_id, start=today - timedelta(days=4), end=today)
    first = wait_until(
        lambda: next((r for r in _backfilled(cluster) if r.started_at is not None), None),
        timeout=30,
        message="the first backfill slot to start",
    )

    cancelled = cancel_backfill(cluster.runtime, schedule_id, reason="enough", by="ops")

    assert cancelled.cancelled == 3
    rows = wait_until(
        lambda: (rows := _backfilled(cluster)) and not any(r.status in OPEN for r in rows) and rows,
        timeout=30,
        message="the run going to end",
    )
    assert [r.status for r in rows] == [ExecutionStatus.SUCCESS] + [ExecutionStatus.REVOKED] * 3
    assert rows[0].id == first.id
    assert {r.error for r in rows[1:]} == {"backfill cancelled by ops: enough"}
    assert [line.split(",")[0] for line in cluster.bodies()] == [first.celery_task_id]
