"""Overlap policies ``buffer_one`` and ``cancel_other`` with a real worker and beat.

A prefork worker (two processes, so two runs of one schedule could overlap if nothing
stopped them) and a ``celery beat`` (DatabaseScheduler) of ``apps.outage_app`` run
``ot.tick``, a DataForgeTask that logs one line, sleeps ``work`` seconds and then appends
its Celery task id to a proof file. Each schedule fires every second (or two) and its
runs last longer than that, so every slot finds a run still going:

- ``buffer_one``: one slot waits for the run going and then runs; the others are
  recorded ``skipped`` with the buffer's reason, never by the lock; runs never overlap.
- ``cancel_other``: each new slot revokes and terminates the run going, which is
  recorded ``revoked`` with the reason (not ``lost``: the worker did not die), its body
  cut short; the new one runs after it, never beside it.

A run cancelled by hand (``control.cancel_run``, behind ``POST /executions/{id}/cancel``)
goes through the same machinery, with the worker alone.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.apps.celery_probe import sender
from tests.integration.cluster import TASK, Cluster, running_cluster
from tests.integration.procs import wait_until

from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.control import cancel_run, run_now
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.errors import ConflictError
from dataforge_scheduler.sql.models import TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def cluster(
    pg: Any, pg_url: str, redis_url: str, redis_client: Any, key_prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    with running_cluster(pg, pg_url, redis_url, key_prefix, tmp_path) as running:
        yield running


def _ran(rows: list[TaskExecution]) -> list[TaskExecution]:
    return [row for row in rows if row.started_at is not None]


def _assert_never_two_at_once(rows: list[TaskExecution]) -> None:
    runs = sorted(_ran(rows), key=lambda row: row.started_at)
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished_at is not None, earlier
        assert later.started_at >= earlier.finished_at, (
            f"run of slot {later.scheduled_for} started at {later.started_at}, before the "
            f"run of slot {earlier.scheduled_for} ended at {earlier.finished_at}"
        )


def test_buffer_one_runs_one_waiting_slot_after_each_run_and_skips_the_rest(
    cluster: Cluster,
) -> None:
    sid = cluster.schedule(
        interval_seconds=1, overlap_policy="buffer_one", handler_kwargs={"work": 2.5}
    )
    cluster.start()
    rows = cluster.run_for(9, sid)
    by_status: dict[ExecutionStatus, list[TaskExecution]] = {}
    for row in rows:
        assert row.scheduled_task_id == sid
        by_status.setdefault(row.status, []).append(row)
    success = by_status.get(ExecutionStatus.SUCCESS, [])
    skipped = by_status.get(ExecutionStatus.SKIPPED, [])
    assert len(success) >= 2, cluster.output()
    assert skipped, "slots finding the buffer full must be recorded skipped"
    for row in skipped:
        assert row.error is not None
        assert "buffer_one" in row.error, row.error
        assert row.started_at is None, "a skipped slot never reached a worker"
    # no run ever met the lock: the buffered slot waited for the run before it
    assert all("lock" not in (row.error or "") for row in rows)
    assert sorted(cluster.bodies()) == sorted(row.celery_task_id for row in success)
    _assert_never_two_at_once(rows)


def test_cancel_other_revokes_the_run_going_with_the_reason_and_runs_the_new_slot(
    cluster: Cluster,
) -> None:
    sid = cluster.schedule(
        interval_seconds=2, overlap_policy="cancel_other", handler_kwargs={"work": 12}
    )
    cluster.start()
    rows = cluster.run_for(9, sid)
    revoked = [row for row in rows if row.status is ExecutionStatus.REVOKED]
    assert len(revoked) >= 2, [(row.status, row.error) for row in rows]
    for row in revoked:
        assert row.scheduled_task_id == sid
        assert row.error is not None
        assert "overlap policy cancel_other" in row.error, row.error
        if row.started_at is not None:  # one not started yet is dropped, not terminated
            assert "(terminated" in row.error, row.error
    statuses = {row.status for row in rows}
    assert ExecutionStatus.LOST not in statuses, cluster.output()
    assert ExecutionStatus.SKIPPED not in statuses, "the new slot must wait, not meet the lock"
    # each cancelled run was cut short: only a run nobody cancelled (the last one, after
    # the beat stopped) finished its body
    finished = {row.celery_task_id for row in rows if row.status is ExecutionStatus.SUCCESS}
    assert len(finished) <= 1
    assert set(cluster.bodies()) == finished
    _assert_never_two_at_once(rows)


def test_a_run_cancelled_by_hand_is_terminated_recorded_and_frees_its_lock(
    cluster: Cluster,
) -> None:
    app = sender(cluster.env)
    cluster.runtime.dispatcher = CeleryDispatcher(app)
    cluster.worker.start().wait_ready()
    try:
        sent = run_now(cluster.runtime, task_name=TASK, kwargs={"work": 60}, validate=False)
        execution_id = sent.run.execution_id

        def row() -> TaskExecution:
            return cluster.execution(execution_id)

        wait_until(lambda: row().started_at is not None, timeout=30, message="the run to start")
        wait_until(lambda: cluster.runtime.locks.list(), timeout=10, message="its lock")
        done = cancel_run(cluster.runtime, execution_id, reason="wrong account", by="ops")
        assert (done.status, done.reason) == (
            ExecutionStatus.RUNNING,
            "cancelled by ops: wrong account",
        )

        ended = wait_until(
            lambda: (found := row()).status is not ExecutionStatus.RUNNING and found,
            timeout=30,
            message="the cancelled run to end",
        )
        assert ended.status is ExecutionStatus.REVOKED, (ended.status, ended.error)
        assert ended.error is not None
        assert ended.error.startswith("cancelled by ops: wrong account (terminated"), ended.error
        assert (ended.finished_at - ended.started_at).total_seconds() < 30, "cut short"
        assert cluster.bodies() == [], "the body never finished"
        wait_until(lambda: cluster.runtime.locks.list() == [], timeout=10, message="lock freed")
        with pytest.raises(ConflictError, match=r"has already ended \(revoked\)"):
            cancel_run(cluster.runtime, execution_id)
    finally:
        app.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_forced_cancel_kills_a_body_that_ignores_sigterm(cluster: Cluster) -> None:
    app = sender(cluster.env)
    cluster.runtime.dispatcher = CeleryDispatcher(app)
    cluster.worker.start().wait_ready()
    try:
        sent = run_now(
            cluster.runtime, task_name="ot.stubborn", kwargs={"work": 60}, validate=False
        )
        execution_id = sent.run.execution_id

        def row() -> TaskExecution:
            return cluster.execution(execution_id)

        wait_until(lambda: row().started_at is not None, timeout=30, message="the run to start")
        wait_until(
            lambda: "ignoring SIGTERM" in cluster.worker.output(),
            timeout=30,
            message="the body to ignore SIGTERM",
        )
        cancel_run(cluster.runtime, execution_id, reason="stuck", by="ops", force=True)

        pid = row().worker_pid
        assert pid is not None
        wait_until(
            lambda: not _alive(pid), timeout=30, message="the stubborn body's process to die"
        )
        ended = wait_until(
            lambda: (found := row()).status is not ExecutionStatus.RUNNING and found,
            timeout=30,
            message="the killed run to be recorded",
        )
        assert f"Terminating {sent.run.celery_task_id} (9)" in cluster.worker.output()
        assert ended.status is ExecutionStatus.REVOKED, (ended.status, ended.error)
        assert ended.error is not None
        assert ended.error.startswith("cancelled by ops: stuck (terminated"), ended.error
        assert cluster.bodies() == []
    finally:
        app.close()
