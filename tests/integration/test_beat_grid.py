"""Real ``celery beat`` processes running DatabaseScheduler against PostgreSQL and Redis.

One recording worker serves the module; each test starts its own beat. Covered: the
seed's verbatim INSERT picked up and fired; cron ``* * * * *``, interval and date
schedules firing on their grid with the right kwargs and headers; a pause through the
store stopping dispatch at once and a raw-SQL pause by the next tick; each misfire
policy after a simulated downtime; a beat SIGKILLed between claim and send losing no
slot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from tests.integration.apps.beat_app import received, received_key
from tests.integration.procs import CeleryProcess, service_env, wait_until

from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import TaskStatus
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.redis.notices import RedisChangeNotices
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import make_session_factory
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

APP = "tests.integration.apps.beat_app"
SCHEDULER = "dataforge_scheduler.celery.beat:DatabaseScheduler"
SEED_INSERT = """\
INSERT INTO scheduled_tasks (name, description, task_type, task_name, interval_seconds, handler_kwargs, status)
VALUES ('sync_accounts_hourly', '每小时同步账号', 'interval', 'dataforge.sync_accounts', 3600, '{}', 'active');
"""  # noqa: E501 - the seed's statement, byte for byte


class Beats:
    """The module's services: env, recording worker, Redis client, a beat factory."""

    def __init__(self, env: dict[str, str], prefix: str, client: redis.Redis, logs: Path):
        self.env = env
        self.prefix = prefix
        self.redis = client
        self.logs = logs
        self.started: list[CeleryProcess] = []

    def beat(self, name: str, *, scheduler: str = SCHEDULER, **env: str) -> CeleryProcess:
        process = CeleryProcess(
            "beat",
            APP,
            env={**self.env, **env},
            log_path=self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log",
            args=["-S", scheduler, "--max-interval", "1"],
        )
        self.started.append(process)
        return process.start()

    def received(self) -> list[dict[str, Any]]:
        return received(self.redis, self.prefix)

    def notices(self) -> RedisChangeNotices:
        return RedisChangeNotices(self.redis, Keys(self.prefix))


@pytest.fixture(scope="module")
def beats(
    pg_url: str, pg_engine: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Beats]:
    prefix = f"dftest-beat-{uuid.uuid4().hex[:8]}"
    env = service_env(database_url=pg_url, redis_url=redis_url, key_prefix=prefix)
    logs = Path(tmp_path_factory.mktemp("beat"))
    worker = CeleryProcess(
        "worker", APP, env=env, log_path=logs / "worker.log", args=["-P", "solo"]
    )
    client = redis.Redis.from_url(redis_url)
    services = Beats(env, prefix, client, logs)
    try:
        worker.start().wait_ready()
        yield services
    finally:
        worker.stop()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def b(beats: Beats, pg: Any) -> Iterator[Beats]:
    beats.redis.delete(received_key(beats.prefix))
    try:
        yield beats
    finally:
        for process in beats.started:
            process.stop()
        beats.started.clear()


def _sql(engine: Any, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def _create(engine: Any, **fields: Any) -> int:
    fields.setdefault("task_name", "bt.record")
    with make_session_factory(engine).begin() as session:
        return store.create_schedule(session, fields, now=utcnow(), default_timezone="UTC").id


def _executions(engine: Any, schedule_id: int) -> list[TaskExecution]:
    query = (
        sa.select(TaskExecution)
        .where(TaskExecution.scheduled_task_id == schedule_id)
        .order_by(TaskExecution.scheduled_for)
    )
    with make_session_factory(engine)() as session:
        return list(session.scalars(query))


def _schedule(engine: Any, schedule_id: int) -> ScheduledTask:
    with make_session_factory(engine)() as session:
        return store.get_schedule(session, schedule_id)


def _slots(messages: list[dict[str, Any]], schedule_id: int) -> list[datetime]:
    return sorted(
        datetime.fromisoformat(m["headers"]["df_slot"])
        for m in messages
        if m["kwargs"].get("scheduled_task_id") == schedule_id
    )


def test_seed_cron_interval_and_date_schedules_fire_on_their_grid(b: Beats, pg: Any) -> None:
    _sql(pg, SEED_INSERT)
    # an hour "passes" for the seeded row: its first slot is two seconds away
    _sql(pg, "UPDATE scheduled_tasks SET created_at = now() - interval '3598 seconds'")
    cron = _create(pg, name="every-minute", task_type="cron", cron_expression="* * * * *")
    every2 = _create(
        pg, name="every-2s", task_type="interval", interval_seconds=2, handler_kwargs={"n": 7}
    )
    once = _create(pg, name="once", task_type="date", run_at=utcnow() + timedelta(seconds=3))
    beat = b.beat("grid")
    beat.wait_for_output(r"active schedules -> 4")

    wait_until(lambda: _slots(b.received(), cron), timeout=75, message="the cron slot")
    wait_until(lambda: len(_slots(b.received(), every2)) >= 4, timeout=20, message="4 slots")
    beat.stop()
    messages = b.received()

    [seeded] = [m for m in messages if m["task"] == "dataforge.sync_accounts"]
    seed = _schedule(pg, 1)
    assert seeded["kwargs"] == {"scheduled_task_id": 1}
    assert datetime.fromisoformat(seeded["headers"]["df_slot"]) == seed.created_at + timedelta(
        hours=1
    )
    assert seed.next_run_at == seed.created_at + timedelta(hours=2)

    [minute] = _slots(messages, cron)[:1]
    assert (minute.second, minute.microsecond) == (0, 0)

    grid = _slots(messages, every2)
    anchor = _schedule(pg, every2).created_at
    assert all((slot - anchor).total_seconds() % 2 == 0 for slot in grid)
    assert {(later - earlier).total_seconds() for earlier, later in pairwise(grid)} == {2.0}
    every2_messages = [m for m in messages if m["kwargs"].get("scheduled_task_id") == every2]
    runs = {e.celery_task_id: e for e in _executions(pg, every2)}
    for message in every2_messages:
        execution = runs[message["id"]]
        assert message["kwargs"] == {"n": 7, "scheduled_task_id": every2}
        assert message["headers"]["df_trigger"] == "schedule"
        assert message["headers"]["df_execution_id"] == execution.id
        assert datetime.fromisoformat(message["headers"]["df_slot"]) == execution.scheduled_for
        assert execution.sent_at is not None

    assert len(_slots(messages, once)) == 1
    assert _schedule(pg, once).status is TaskStatus.COMPLETED
    assert "Sending due task every-2s (bt.record)" in beat.output()


def test_a_store_pause_stops_dispatch_at_once_and_a_raw_sql_pause_by_the_next_tick(
    b: Beats, pg: Any
) -> None:
    first = _create(pg, name="paused-by-store", task_type="interval", interval_seconds=1)
    second = _create(pg, name="paused-by-sql", task_type="interval", interval_seconds=1)
    b.beat("pause").wait_ready()
    wait_until(lambda: len(_slots(b.received(), first)) >= 2, timeout=20, message="2 slots")

    with make_session_factory(pg).begin() as session:
        store.pause_schedule(session, first, now=utcnow())
    paused_at = utcnow()
    b.notices().publish(first)  # what the API does after committing a change
    _sql(pg, "UPDATE scheduled_tasks SET status = 'paused' WHERE id = :id", id=second)
    raw_paused_at = utcnow()

    settle = utcnow() + timedelta(seconds=3)
    wait_until(lambda: utcnow() > settle, timeout=5, message="three more seconds of beat")
    assert max(e.scheduled_for for e in _executions(pg, first)) <= paused_at
    assert max(e.scheduled_for for e in _executions(pg, second)) <= raw_paused_at

    with make_session_factory(pg).begin() as session:
        store.resume_schedule(session, first, now=utcnow(), default_timezone="UTC")
    resumed_at = utcnow()
    b.notices().publish(first)
    wait_until(
        lambda: [s for s in _slots(b.received(), first) if s > resumed_at],
        timeout=10,
        message="a slot after the resume",
    )
    after = [e.scheduled_for for e in _executions(pg, first) if e.scheduled_for > paused_at]
    assert all(slot > resumed_at for slot in after)  # nothing from the paused hours
    assert len(after) <= 3


def test_each_misfire_policy_after_a_simulated_downtime(b: Beats, pg: Any) -> None:
    hour_ago = utcnow() - timedelta(hours=1)
    ids = {}
    for policy in ("run_once", "skip", "catch_up"):
        ids[policy] = _create(
            pg, name=policy, task_type="interval", interval_seconds=60, misfire_policy=policy
        )
        # the scheduler was down: next_run_at is an hour in the past, the grid is older
        _sql(
            pg,
            "UPDATE scheduled_tasks SET created_at = :created, next_run_at = :due WHERE id = :id",
            created=hour_ago - timedelta(minutes=1),
            due=hour_ago,
            id=ids[policy],
        )
    started = utcnow()
    b.beat("misfire", DATAFORGE_CATCH_UP_MAX_RUNS="4")

    def advanced() -> bool:
        return all((_schedule(pg, sid).next_run_at or started) > started for sid in ids.values())

    wait_until(advanced, timeout=30, message="every row moved past now")
    wait_until(lambda: len(b.received()) >= 5, timeout=20, message="5 messages")
    # the latest catch_up_max_runs (4) late slots of each get a row; what ran says the policy
    statuses = {
        policy: [e.status.value for e in _executions(pg, sid)] for policy, sid in ids.items()
    }
    assert statuses == {
        "run_once": ["missed", "missed", "missed", "pending"],
        "skip": ["missed"] * 4,
        # bt.record is a plain Celery task: no lock to race for, so the backlog goes at once
        "catch_up": ["pending"] * 4,
    }
    for sid in ids.values():
        slots = [e.scheduled_for for e in _executions(pg, sid)]
        steps = [(later - earlier).total_seconds() for earlier, later in pairwise(slots)]
        assert steps == [60.0] * 3
        assert slots[-1] <= started < slots[-1] + timedelta(minutes=1)
    sent = [e for sid in ids.values() for e in _executions(pg, sid) if e.sent_at is not None]
    assert {e.status.value for e in sent} == {"pending"}
    assert len(sent) == 5
    missed = [e for sid in ids.values() for e in _executions(pg, sid) if e.status.value == "missed"]
    assert all("misfire" in (e.error or "") for e in missed)


def test_a_beat_killed_between_claim_and_send_loses_no_slot(b: Beats, pg: Any) -> None:
    sid = _create(pg, name="survives-a-crash", task_type="interval", interval_seconds=60)
    _sql(pg, "UPDATE scheduled_tasks SET next_run_at = now() WHERE id = :id", id=sid)
    crashing = b.beat("crashing", scheduler=f"{APP}:CrashingScheduler")
    assert crashing.proc is not None
    crashing.proc.wait(timeout=30)
    assert crashing.proc.returncode == -9  # SIGKILLed itself right before sending
    [claimed] = _executions(pg, sid)
    assert claimed.sent_at is None
    assert b.received() == []

    b.beat("survivor").wait_ready()
    [message] = wait_until(b.received, timeout=30, message="the claimed slot to be sent")
    assert message["id"] == claimed.celery_task_id
    assert message["headers"]["df_execution_id"] == claimed.id
    [execution] = _executions(pg, sid)
    assert execution.sent_at is not None
    assert execution.scheduled_for == claimed.scheduled_for
    assert datetime.now(UTC) - execution.sent_at < timedelta(seconds=30)


def test_a_raw_sql_change_wakes_an_idle_beat_through_the_database_trigger(
    b: Beats, pg: Any
) -> None:
    """With nothing due for an hour and a 60 s sync interval, beat sleeps a minute; a
    raw ``UPDATE ... next_run_at = now()`` (no Redis notice: nobody published one) is
    announced by the table's trigger, and the beat sends the slot at once."""
    schedule_id = _create(pg, name="far-away", task_type="interval", interval_seconds=3600)
    beat = CeleryProcess(
        "beat",
        APP,
        env={**b.env, "DATAFORGE_CELERY_BEAT_SYNC_EVERY": "60"},
        log_path=b.logs / f"listen-{uuid.uuid4().hex[:6]}.log",
        args=["-S", SCHEDULER, "--max-interval", "60", "--loglevel", "DEBUG"],
    )
    b.started.append(beat)
    beat.start().wait_ready()
    # its first pass planned the row an hour ahead; now it waits the whole minute
    beat.wait_for_output(r"next run at \S+ \S+; waiting (5\d|60)\.\d\d s", timeout=30)
    assert _slots(b.received(), schedule_id) == []

    _sql(pg, "UPDATE scheduled_tasks SET next_run_at = now() WHERE id = :id", id=schedule_id)
    changed = utcnow()
    wait_until(
        lambda: _slots(b.received(), schedule_id),
        timeout=15,  # far below the minute it would otherwise sleep
        message="the slot the raw UPDATE made due",
    )
    # sent_at is recorded just after the send
    sent_rows = wait_until(
        lambda: [e for e in _executions(pg, schedule_id) if e.sent_at is not None],
        timeout=5,
        message="the slot's sent_at",
    )
    (sent,) = sent_rows
    print(f"raw UPDATE to sent: {(sent.sent_at - changed).total_seconds():.3f} s")
    assert "woken by a schedule-change notice" in beat.output()
