"""Run history through outages of PostgreSQL and of Redis, with a real worker and beat.

A prefork worker and a ``celery beat`` (DatabaseScheduler) of ``apps.outage_app`` run
``ot.tick`` from four 1-second interval schedules, while the test also sends it directly
four times a second. Every body that runs appends its Celery task id to a file, which no
outage touches. Then one store goes away under that load:

- PostgreSQL restarted (``pg_ctlcluster ... restart``), or stopped for 8 s;
- Redis restarted (``SHUTDOWN SAVE``, then started again on its dump, as a Redis with
  persistence restarts).

After the load stops and the outbox drains, every body that ran has its row, ``success``
(with its log line); no row is ``lost``; a row is ``failed`` or ``skipped`` only for a
run whose body never ran. The lost-run reaper runs (grace 5 s) throughout the drain and
judges nothing. Whatever happens, the store is running again when a test ends.

PostgreSQL is driven with ``pg_ctlcluster`` (Debian's tool, as root), Redis with
``redis-server`` on 127.0.0.1:6379: the services this suite's CI starts.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from tests.integration.procs import CeleryProcess, service_env, wait_until

from dataforge_scheduler.celery.reaper import reap_lost_executions
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import TaskExecution

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

APP = "tests.integration.apps.outage_app"
TASK = "ot.tick"
SCHEDULER = "dataforge_scheduler.celery.beat:DatabaseScheduler"
SCHEDULES = 4
SEND_EVERY = 0.25  # seconds between direct sends
BEFORE = 8  # bodies that ran before the outage
AFTER = 12  # bodies that ran after it


# ---------------------------------------------------------------- the services


def _postgres_cluster() -> str:
    versions = sorted(Path("/etc/postgresql").glob("*"))
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.fail("these tests drive PostgreSQL with Debian's pg_ctlcluster, not found here")
    return versions[-1].name


def _pg_ctl(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _postgres_cluster(), "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _pg_up(engine: Any) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError:
        return False
    return True


def _ensure_postgres(engine: Any) -> None:
    """Start the cluster if it is down (a test that stopped it failed half-way)."""
    if not _pg_up(engine):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", _postgres_cluster(), "main", "start"],
            check=False,
            capture_output=True,
            timeout=120,
        )
    wait_until(lambda: _pg_up(engine), timeout=60, message="PostgreSQL to accept connections")


def _local_redis(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    if (parts.hostname, parts.port or 6379) not in {("127.0.0.1", 6379), ("localhost", 6379)}:
        pytest.fail(f"the Redis restart test drives a local Redis on 6379, not {redis_url}")
    if shutil.which("redis-server") is None:
        pytest.fail("the Redis restart test needs redis-server")


def _redis_up(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _start_redis(config: dict[str, str]) -> None:
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379"]
        + [part for name, value in config.items() for part in (f"--{name}", value)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _redis_config(client: redis.Redis) -> dict[str, str]:
    """What a restart must keep: where the dump is, and the persistence settings."""
    return {
        name: str(client.config_get(name)[name])
        for name in ("dir", "dbfilename", "save", "appendonly")
    }


def _restart_redis(client: redis.Redis, config: dict[str, str]) -> None:
    """Stop Redis with a final save and start it again on that dump: what a Redis with
    persistence does on a restart (the broker's queues survive it too). A dump file
    this made is removed once loaded."""
    dump = Path(config["dir"]) / config["dbfilename"]
    existed = dump.exists()
    with contextlib.suppress(redis.ConnectionError):  # it closes the connection as it exits
        client.shutdown(save=True)
    wait_until(lambda: not _redis_up(client), timeout=30, message="Redis to stop")
    time.sleep(1.0)  # down for a moment, under load
    _start_redis(config)
    wait_until(lambda: _redis_up(client), timeout=30, message="Redis to start again")
    if not existed:
        dump.unlink(missing_ok=True)


# ---------------------------------------------------------------- the load


class Load:
    """A worker, a beat and a sender of ``ot.tick``; the bodies' proof file."""

    def __init__(self, env: dict[str, str], logs: Path, body_log: Path, sender: Celery):
        self.body_log = body_log
        self.sender = sender
        self.worker = CeleryProcess(
            "worker", APP, env=env, log_path=logs / "worker.log", args=["-P", "prefork", "-c", "3"]
        )
        self.beat = CeleryProcess(
            "beat", APP, env=env, log_path=logs / "beat.log", args=["-S", SCHEDULER]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self.send_errors = 0

    def start(self) -> None:
        self.worker.start().wait_ready()
        self.beat.start().wait_ready()
        self._thread.start()

    def _send(self) -> None:
        while not self._stop.wait(SEND_EVERY):
            try:
                self.sender.send_task(TASK, kwargs={"work": 0.1})
            except Exception:  # Redis is down: the sender's problem, not the history's
                self.send_errors += 1

    def bodies(self) -> list[str]:
        if not self.body_log.exists():
            return []
        return self.body_log.read_text(encoding="utf-8").split()

    def supervise(self) -> None:
        """Restart the worker if it died (``CeleryProcess.restart_if_dead``): what must
        hold then is the history, not that Celery survived the outage."""
        self.worker.restart_if_dead()

    @property
    def restarts(self) -> int:
        return self.worker.restarts

    def wait_for_bodies(self, count: int, *, since: int = 0) -> None:
        def enough() -> bool:
            self.supervise()
            return len(self.bodies()) >= since + count

        try:
            wait_until(enough, timeout=90, message=f"{count} more bodies to run")
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}\n{self.output()}") from None

    def stop_sending(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.beat.stop()

    def stop(self) -> None:
        self.stop_sending()
        self.worker.stop()

    def output(self) -> str:
        return (
            f"worker (restarted {self.restarts}x):\n{self.worker.output()[-6000:]}\n"
            f"beat:\n{self.beat.output()[-3000:]}"
        )


@pytest.fixture
def runtime(
    pg: Any, pg_url: str, redis_client: Any, redis_url: str, key_prefix: str
) -> Iterator[Runtime]:
    settings = Settings(
        database_url=pg_url,
        redis_url=redis_url,
        celery_broker_url=redis_url,
        key_prefix=key_prefix,
        lost_run_grace_seconds=5,
    )
    rt = Runtime(settings, registry=TaskRegistry(), engine=pg)
    yield rt
    rt.close()


@pytest.fixture
def load(
    runtime: Runtime, pg_url: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[Load]:
    env = service_env(
        database_url=pg_url,
        redis_url=redis_url,
        key_prefix=key_prefix,
        DATAFORGE_TEST_BODY_LOG=str(tmp_path / "bodies.txt"),
        DATAFORGE_CELERY_BEAT_SYNC_EVERY="1",
    )
    with runtime.session() as session:
        for number in range(SCHEDULES):
            store.create_schedule(
                session,
                {
                    "name": f"tick-{number}",
                    "task_type": "interval",
                    "task_name": TASK,
                    "interval_seconds": 1,
                    "handler_kwargs": {"work": 0.2},
                },
                now=utcnow() - timedelta(seconds=0.5),
                default_timezone="UTC",
            )
        session.commit()
    prefix = {"global_keyprefix": env["DATAFORGE_TEST_BROKER_PREFIX"]}
    sender = Celery("outage-sender", broker=redis_url, backend=redis_url)
    sender.conf.broker_transport_options = prefix
    sender.conf.result_backend_transport_options = prefix
    running = Load(env, tmp_path, tmp_path / "bodies.txt", sender)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        sender.close()


# ---------------------------------------------------------------- the verdict


def _rows(runtime: Runtime) -> dict[str, TaskExecution]:
    with runtime.session() as session:
        rows = session.scalars(sa.select(TaskExecution)).all()
        session.expunge_all()
    return {row.celery_task_id: row for row in rows}


def _drain_and_judge(runtime: Runtime, load: Load) -> set[str]:
    """Stop the load, let every run end and the outbox drain, reaping all along; then
    every body that ran is a ``success`` row and nothing is ``lost``."""
    load.stop_sending()
    judged: list[int] = []
    seen: dict[str, Any] = {}
    # not pending: a claimed slot the stopped beat never sent stays pending, and a
    # pending row's body has not run (once it has, its records keep the outbox busy)
    open_states = {ExecutionStatus.RUNNING, ExecutionStatus.RETRYING}

    def settled() -> bool:
        load.supervise()
        judged.extend(reap_lost_executions(runtime).lost)
        seen["bodies"] = bodies = load.bodies()
        seen["rows"] = rows = _rows(runtime)
        done = all(
            rows.get(run) is not None and rows[run].status is ExecutionStatus.SUCCESS
            for run in bodies
        )
        still_open = any(row.status in open_states for row in rows.values())
        return done and not still_open and runtime.backend.journal.stats().length == 0

    try:
        wait_until(settled, timeout=90, interval=0.5, message="every body's row to be success")
    except AssertionError:
        rows = _rows(runtime)
        missing = {
            run: None if rows.get(run) is None else (rows[run].status, rows[run].error)
            for run in load.bodies()
            if rows.get(run) is None or rows[run].status is not ExecutionStatus.SUCCESS
        }
        still_open = {run: row.status for run, row in rows.items() if row.status in open_states}
        raise AssertionError(
            f"bodies without a success row: {missing}; open rows: {still_open}; outbox: "
            f"{runtime.backend.journal.stats()}\n{load.output()}"
        ) from None
    rows = seen["rows"]
    bodies = set(seen["bodies"])
    assert len(bodies) == len(seen["bodies"]), "a body ran twice"
    by_status: dict[ExecutionStatus, set[str]] = {}
    for run, row in rows.items():
        by_status.setdefault(row.status, set()).add(run)
    if load.restarts == 0:
        assert judged == [], "the reaper judged runs that were alive"
        assert by_status.get(ExecutionStatus.LOST, set()) == set(), load.output()
    else:  # a run the dead worker's pool had begun may be lost, never one whose body ran
        assert not by_status.get(ExecutionStatus.LOST, set()) & bodies, load.output()
    assert by_status.get(ExecutionStatus.SUCCESS, set()) == bodies
    for status in (ExecutionStatus.FAILED, ExecutionStatus.SKIPPED):
        assert not by_status.get(status, set()) & bodies, f"{status} rows whose body ran"
    for run in bodies:
        assert rows[run].log_output == f"tick {run}", rows[run].log_output
        assert rows[run].started_at is not None
        assert rows[run].worker_hostname

    # a run that ended while Redis was away frees its lock once Redis is back (its pool
    # process retries the release), so the schedule's next runs are not skipped until
    # the lock's TTL. A worker that died meanwhile (kombu's crash on a Redis restart)
    # took that retry with it: a lock left so is held by a run whose row has ended.
    def released() -> bool:
        held = runtime.locks.list()
        if load.restarts == 0:
            return held == []
        return all(
            lock.celery_task_id in rows and rows[lock.celery_task_id].status not in open_states
            for lock in held
        )

    wait_until(released, timeout=10, message="every lock of a live worker to be released")
    return bodies


def _outage_under_load(runtime: Runtime, load: Load, outage: Callable[[], None]) -> set[str]:
    """The bodies that ran, each judged to have its ``success`` row."""
    load.wait_for_bodies(BEFORE)
    outage()
    load.wait_for_bodies(AFTER, since=len(load.bodies()))
    return _drain_and_judge(runtime, load)


# ---------------------------------------------------------------- the tests


def test_a_postgres_restart_loses_no_history(runtime: Runtime, load: Load, pg: Any) -> None:
    try:
        judged = _outage_under_load(runtime, load, lambda: _pg_ctl("restart"))
        assert len(judged) >= BEFORE + AFTER  # runs before and after the outage
    finally:
        _ensure_postgres(pg)


def test_postgres_stopped_for_eight_seconds_loses_no_history(
    runtime: Runtime, load: Load, pg: Any
) -> None:
    def stop_for_a_while() -> None:
        _pg_ctl("stop")
        try:
            time.sleep(8)
        finally:
            _pg_ctl("start")

    try:
        judged = _outage_under_load(runtime, load, stop_for_a_while)
        assert len(judged) >= BEFORE + AFTER  # runs before and after the outage
    finally:
        _ensure_postgres(pg)


def test_a_redis_restart_loses_no_history(
    runtime: Runtime, load: Load, redis_url: str, redis_client: redis.Redis
) -> None:
    _local_redis(redis_url)
    config = _redis_config(redis_client)
    try:
        judged = _outage_under_load(runtime, load, lambda: _restart_redis(redis_client, config))
        assert len(judged) >= BEFORE + AFTER  # runs before and after the outage
    finally:
        if not _redis_up(redis_client):
            _start_redis(config)
            wait_until(lambda: _redis_up(redis_client), timeout=30, message="Redis to start")
