"""Two real ``celery beat`` processes share one PostgreSQL schedule; one is SIGKILLed.

Three one-second interval schedules run for about 25 seconds (75 slots) under two
beats; one beat is SIGKILLed in the middle. Every slot between the first and the last
must have exactly one execution row, have been sent, and have reached the recording
worker: no duplicate slot and no missed one. Both beats must have sent slots (they
share the work; neither leads).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from tests.integration.apps.beat_app import received
from tests.integration.procs import CeleryProcess, service_env, wait_until

from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

APP = "tests.integration.apps.beat_app"
BEAT_ARGS = ["-S", "dataforge_scheduler.celery.beat:DatabaseScheduler", "--max-interval", "1"]
SENT = "Sending due task"


@pytest.fixture
def cluster(
    pg: Any, pg_url: str, redis_url: str, key_prefix: str, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[list[CeleryProcess]]:
    env = service_env(database_url=pg_url, redis_url=redis_url, key_prefix=key_prefix)
    processes = [
        CeleryProcess(
            "worker", APP, env=env, log_path=tmp_path / "worker.log", args=["-P", "solo"]
        ),
        CeleryProcess("beat", APP, env=env, log_path=tmp_path / "beat-a.log", args=BEAT_ARGS),
        CeleryProcess("beat", APP, env=env, log_path=tmp_path / "beat-b.log", args=BEAT_ARGS),
    ]
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


def _slots(engine: Any) -> list[TaskExecution]:
    with make_session_factory(engine)() as session:
        return list(session.scalars(sa.select(TaskExecution)))


def test_two_beats_one_sigkilled_send_every_slot_exactly_once(
    cluster: list[CeleryProcess], pg: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    worker, beat_a, beat_b = cluster
    with make_session_factory(pg).begin() as session:
        ids = [
            store.create_schedule(
                session,
                {
                    "name": f"ha-{n}",
                    "task_type": "interval",
                    "interval_seconds": 1,
                    "task_name": "bt.record",
                    "handler_kwargs": {"n": n},
                },
                now=utcnow(),
                default_timezone="UTC",
            ).id
            for n in range(3)
        ]
    worker.start()
    beat_a.start()
    beat_b.start()
    for process in cluster:
        process.wait_ready()

    wait_until(lambda: len(_slots(pg)) >= 24, timeout=30, message="24 slots before the kill")
    wait_until(
        lambda: SENT in beat_a.output() and SENT in beat_b.output(),
        timeout=15,
        message="both beats sending",
    )
    beat_a.kill(signal.SIGKILL)
    killed_at = utcnow()
    assert beat_a.proc is not None
    assert beat_a.proc.returncode == -signal.SIGKILL

    resend_window = killed_at + timedelta(seconds=12)  # past the 10 s unsent sweep
    wait_until(
        lambda: len(_slots(pg)) >= 75 and utcnow() > resend_window,
        timeout=60,
        message="75 slots and the resend window",
    )
    with pg.begin() as connection:
        connection.execute(sa.text("UPDATE scheduled_tasks SET status = 'paused'"))
    wait_until(
        lambda: all(e.sent_at is not None for e in _slots(pg)),
        timeout=30,
        message="every claimed slot sent",
    )
    executions = _slots(pg)
    wait_until(
        lambda: (
            {m["id"] for m in received(redis_client, key_prefix)}
            >= {e.celery_task_id for e in executions}
        ),
        timeout=30,
        message="every sent slot delivered",
    )

    assert len(executions) >= 75
    for sid in ids:
        slots = sorted(e.scheduled_for for e in executions if e.scheduled_task_id == sid)
        assert len(slots) == len(set(slots)), "a slot was claimed twice"
        gaps = [later - earlier for earlier, later in pairwise(slots)]
        assert set(gaps) == {timedelta(seconds=1)}, f"schedule {sid} missed a slot: {gaps}"
        assert slots[0] < killed_at < slots[-1]

    messages = received(redis_client, key_prefix)
    by_id = {e.celery_task_id: e for e in executions}
    delivered = Counter(m["id"] for m in messages)
    assert set(delivered) == set(by_id)
    for message in messages:
        execution = by_id[message["id"]]
        assert datetime.fromisoformat(message["headers"]["df_slot"]) == execution.scheduled_for
        assert message["kwargs"]["scheduled_task_id"] == execution.scheduled_task_id
    # a slot goes out twice only if a beat died after its send and before recording it;
    # the worker side refuses such a duplicate (a row past pending never runs again)
    assert sum(count - 1 for count in delivered.values()) <= 3
