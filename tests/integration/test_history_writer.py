"""The history writer on real Redis and PostgreSQL: what it does when it dies, when the
database is away, and when the database refuses a record.

The outbox is filled with real records (``RunJournal.start``/``finish``, as a worker's
runs append them). Writers run as the ``dataforge-scheduler history-writer`` command in
a subprocess when the test kills one, in-process otherwise. To catch a writer in the
middle of a batch the test holds a lock on ``task_executions`` (its transaction waits),
and, to catch it after its commit and before its acknowledgement, pauses Redis writes
(``CLIENT PAUSE ... WRITE``), so every kill lands exactly where it is meant to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from tests.integration.procs import REPO_ROOT, wait_until

from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.journal import FinishRecord, StartRecord
from dataforge_scheduler.history import HistoryWriter
from dataforge_scheduler.redis import journal as redis_journal
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

RUNS = 300
GROUP = "history"


def _settings(pg_url: str, redis_url: str, key_prefix: str, **extra: Any) -> Settings:
    return Settings(
        database_url=pg_url,
        redis_url=redis_url,
        key_prefix=key_prefix,
        history_batch_size=100,
        history_linger_seconds=0,
        history_claim_after_seconds=2,
        history_retry_max_seconds=1,
        **extra,
    )


@pytest.fixture
def runtime(
    pg: Any, pg_url: str, redis_client: Any, redis_url: str, key_prefix: str
) -> Iterator[Runtime]:
    rt = Runtime(_settings(pg_url, redis_url, key_prefix), registry=TaskRegistry(), engine=pg)
    yield rt
    rt.close()


def _schedule(runtime: Runtime) -> int:
    with runtime.session() as session:
        row = store.create_schedule(
            session,
            {"name": "written", "task_type": "manual", "task_name": "hw.run"},
            now=utcnow() - timedelta(hours=1),
            default_timezone="UTC",
        )
        session.commit()
        return row.id


def _fill(runtime: Runtime, schedule_id: int, runs: int = RUNS, *, tag: str = "hw") -> list[str]:
    """``runs`` runs of the schedule, each a start and a final end in the outbox; every
    third one failed, so a replay that changed outcomes would show."""
    journal = runtime.backend.journal
    base = utcnow()
    ids = []
    for n in range(runs):
        run = f"{tag}-{n:05d}"
        at = base + timedelta(milliseconds=10 * n)
        journal.start(
            StartRecord(
                celery_task_id=run,
                task_name="hw.run",
                scheduled_task_id=schedule_id,
                trigger="schedule",
                worker_hostname="w1",
                worker_pid=1,
                kwargs={"n": n},
                retries=0,
                at=at,
            ),
            lock=None,
            state_ttl=600,
        )
        failed = n % 3 == 0
        journal.finish(
            FinishRecord(
                celery_task_id=run,
                status=ExecutionStatus.FAILED if failed else ExecutionStatus.SUCCESS,
                at=at + timedelta(milliseconds=5),
                result=None if failed else n,
                error="boom" if failed else None,
                attempt=0,
                log=f"line {n}",
            ),
            log_lines=[f"line {n}"],
            log_ttl=600,
            lock=None,
            state_ttl=600,
        )
        ids.append(run)
    return ids


def _rows(runtime: Runtime) -> dict[str, tuple[Any, ...]]:
    with runtime.session() as session:
        rows = session.execute(
            sa.select(
                TaskExecution.celery_task_id,
                TaskExecution.status,
                TaskExecution.result,
                TaskExecution.error,
                TaskExecution.log_output,
                TaskExecution.finished_at,
            )
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def _counters(runtime: Runtime, schedule_id: int) -> tuple[int, int, int]:
    with runtime.session() as session:
        schedule = session.get(ScheduledTask, schedule_id)
        assert schedule is not None
        return schedule.run_count, schedule.success_count, schedule.failure_count


def _expected_counters(runs: int) -> tuple[int, int, int]:
    failures = len(range(0, runs, 3))
    return runs, runs - failures, failures


def _assert_all_written_once(runtime: Runtime, schedule_id: int, ids: list[str]) -> None:
    rows = _rows(runtime)
    assert sorted(rows) == ids
    for n, run in enumerate(ids):
        status, result, error, log, finished_at = rows[run]
        if n % 3 == 0:
            assert (status, result, error) == (ExecutionStatus.FAILED, None, "boom"), run
        else:
            assert (status, result, error) == (ExecutionStatus.SUCCESS, n, None), run
        assert log == f"line {n}"
        assert finished_at is not None
    assert _counters(runtime, schedule_id) == _expected_counters(len(ids))
    stats = runtime.backend.journal.stats()
    assert (stats.length, stats.in_flight) == (0, 0)


def _pending_of(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Unacknowledged records per consumer of the outbox's group."""
    summary = client.xpending(Keys(prefix).outbox(), GROUP)
    return {
        (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"])
        for c in summary.get("consumers") or []
    }


class WriterProcess:
    """``dataforge-scheduler history-writer`` in a subprocess."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        env = dict(os.environ)
        env.update(
            {
                "DATAFORGE_DATABASE_URL": settings.database_url,
                "DATAFORGE_REDIS_URL": settings.effective_redis_url,
                "DATAFORGE_KEY_PREFIX": settings.key_prefix,
                "DATAFORGE_HISTORY_BATCH_SIZE": str(settings.history_batch_size),
                "DATAFORGE_HISTORY_LINGER_SECONDS": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dataforge_scheduler", "history-writer"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


class TableLock:
    """An open transaction holding ``task_executions`` in ACCESS EXCLUSIVE mode: every
    writer's transaction waits on it until ``release()``."""

    def __init__(self, engine: Any) -> None:
        self._connection = engine.connect()
        self._transaction = self._connection.begin()
        self._connection.execute(sa.text("LOCK TABLE task_executions IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        if self._transaction.is_active:
            self._transaction.rollback()
        self._connection.close()


def _waiting_on_the_lock(engine: Any) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            )
            or 0
        )


def test_a_writer_killed_mid_batch_leaves_its_records_to_another(
    runtime: Runtime, pg: Any, redis_client: redis.Redis, key_prefix: str, tmp_path: Path
) -> None:
    schedule_id = _schedule(runtime)
    ids = _fill(runtime, schedule_id)
    lock = TableLock(pg)
    doomed = WriterProcess(runtime.settings, tmp_path / "doomed.log")
    try:
        # it read a batch and its transaction waits on the table: mid-batch
        wait_until(lambda: _waiting_on_the_lock(pg) >= 1, timeout=30, message="a waiting batch")
        held = _pending_of(redis_client, key_prefix)
        assert sum(held.values()) == 100, held
        doomed.kill()
    finally:
        lock.release()
        doomed.kill()
    assert _rows(runtime) == {}  # nothing of the killed batch was committed

    survivor = HistoryWriter(runtime)
    wait_until(
        lambda: survivor.run_once() == 0 and runtime.backend.journal.stats().length == 0,
        timeout=60,
        message="the survivor to drain the outbox",
    )
    assert survivor.stats.claimed == 100
    _assert_all_written_once(runtime, schedule_id, ids)


def test_a_batch_committed_but_not_acknowledged_is_applied_again_to_no_effect(
    runtime: Runtime, pg: Any, redis_client: redis.Redis, key_prefix: str, tmp_path: Path
) -> None:
    schedule_id = _schedule(runtime)
    ids = _fill(runtime, schedule_id)
    lock = TableLock(pg)
    doomed = WriterProcess(runtime.settings, tmp_path / "doomed.log")
    control = redis.Redis.from_url(runtime.settings.effective_redis_url)
    try:
        wait_until(lambda: _waiting_on_the_lock(pg) >= 1, timeout=30, message="a waiting batch")
        # writes to Redis (its acknowledgement among them) now wait; then it commits
        control.client_pause(30_000, all=False)
        lock.release()
        # a batch of 100 records: the start and the end of 50 runs
        wait_until(lambda: len(_rows(runtime)) == 50, timeout=30, message="its commit")
        committed = _rows(runtime)
        counted = _counters(runtime, schedule_id)
        doomed.kill()
    finally:
        control.client_unpause()
        lock.release()
        doomed.kill()
        control.close()
    assert counted == _expected_counters(50)  # counted once
    assert sum(_pending_of(redis_client, key_prefix).values()) == 100  # never acknowledged

    survivor = HistoryWriter(runtime)
    wait_until(
        lambda: survivor.run_once() == 0 and runtime.backend.journal.stats().length == 0,
        timeout=60,
        message="the survivor to drain the outbox",
    )
    assert survivor.stats.claimed == 100
    after = _rows(runtime)
    assert {run: after[run] for run in committed} == committed  # replayed: no change
    _assert_all_written_once(runtime, schedule_id, ids)


def test_the_writer_keeps_its_batch_while_the_database_is_away(
    runtime: Runtime, pg_url: str, redis_url: str, key_prefix: str
) -> None:
    schedule_id = _schedule(runtime)
    ids = _fill(runtime, schedule_id, runs=30)
    away = Runtime(
        _settings("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", redis_url, key_prefix),
        registry=TaskRegistry(),
    )
    try:
        writer = HistoryWriter(away)
        thread = threading.Thread(target=writer.run_forever, daemon=True)
        thread.start()
        wait_until(lambda: writer.stats.failures >= 3, timeout=30, message="failed attempts")
        writer.stop()
        thread.join(timeout=10)
    finally:
        away.close()
    assert writer.stats.records == 0
    stats = runtime.backend.journal.stats()
    assert (stats.length, stats.in_flight) == (60, 60)  # read, kept, never acknowledged

    survivor = HistoryWriter(runtime)
    wait_until(
        lambda: survivor.run_once() == 0 and runtime.backend.journal.stats().length == 0,
        timeout=30,
        message="the records to be applied once the database is there",
    )
    _assert_all_written_once(runtime, schedule_id, ids)


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_applied(
    runtime: Runtime, redis_client: redis.Redis, key_prefix: str
) -> None:
    schedule_id = _schedule(runtime)
    good = _fill(runtime, schedule_id, runs=10)
    poison = StartRecord(
        celery_task_id="poison",
        task_name="x" * 300,  # longer than task_executions.task_name allows
        scheduled_task_id=None,
        trigger="external",
        worker_hostname=None,
        worker_pid=None,
        kwargs={},
        retries=0,
        at=utcnow(),
    )
    runtime.backend.journal.start(poison, lock=None, state_ttl=600)
    writer = HistoryWriter(runtime)
    while writer.run_once():
        pass
    assert writer.stats.rejected == 1
    _assert_all_written_once(runtime, schedule_id, good)
    dead = redis_client.xrange(Keys(key_prefix).outbox_dead())
    assert len(dead) == 1
    fields = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert '"poison"' in fields["r"]
    assert "task_name" in fields["why"] or "too long" in fields["why"], fields["why"]


def test_claiming_forgets_stopped_writers_that_hold_nothing(
    runtime: Runtime, redis_client: redis.Redis, key_prefix: str, monkeypatch: Any
) -> None:
    schedule_id = _schedule(runtime)
    _fill(runtime, schedule_id, runs=2)
    journal = runtime.backend.journal
    outbox = Keys(key_prefix).outbox()
    journal.read("holder", count=1, block=0)  # a stopped writer that still holds a record
    redis_client.xgroup_createconsumer(outbox, GROUP, "idle-and-empty")
    monkeypatch.setattr(redis_journal, "FORGET_IDLE_SECONDS", 0.2)
    wait_until(
        lambda: (
            journal.claim("survivor", idle=3600, count=10) == []
            and "idle-and-empty" not in _pending_of(redis_client, key_prefix)
            and "idle-and-empty" not in _consumers(redis_client, outbox)
        ),
        timeout=5,
        message="the empty consumer to be forgotten",
    )
    # the one holding a record is kept: deleting it would make the record unclaimable
    assert "holder" in _consumers(redis_client, outbox)
    assert _pending_of(redis_client, key_prefix) == {"holder": 1}


def _consumers(client: redis.Redis, outbox: str) -> set[str]:
    return {
        c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
        for c in client.xinfo_consumers(outbox, GROUP)
    }
