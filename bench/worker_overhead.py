"""Worker overhead: tasks/s of a plain Celery task vs the same task as a DataForgeTask.

One real worker process (prefork, concurrency 2 by default; ``--pool solo``) on real
Redis (broker and result backend) and a scratch PostgreSQL database runs N tasks of each
kind. Each batch is queued first on a queue the worker does not consume, then the worker
is told to consume it (``add_consumer``) and the clock runs until every task finished:
for the plain task until its N results are in the result backend, for the DataForgeTask
until its N ``task_executions`` rows are ``success``. A DataForgeTask run is the real
per-run path: a ``running`` row, a Redis lock on its schedule, one ``task_log`` line,
the outcome and counters in one transaction, the live log closed, the lock released.
The worker counts its SQL statements, transactions and pool checkouts with SQLAlchemy
event listeners and reports them when it shuts down.

    python bench/worker_overhead.py [--tasks 2000] [--pool prefork|solo] [--concurrency 2]

This module is also the worker's app (``celery -A worker_overhead``), built from the
environment on first access to ``app``.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from _common import (
    Worker,
    machine,
    new_prefix,
    redis_namespace,
    redis_url,
    scratch_database,
    service_env,
    wait_for,
)
from celery import Celery, signals

from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql.engine import create_engine
from dataforge_scheduler.sql.models import ScheduledTask, TaskExecution, create_all, metadata
from dataforge_scheduler.wiring import setup

PLAIN = "bench.plain"
DATAFORGE = "bench.dataforge"
WARM_QUEUE = "bench.warm"
NODE = "bench"
COUNT_VAR = "DATAFORGE_BENCH_COUNT_SQL"
_counts: collections.Counter[str] = collections.Counter()


def counts_key(prefix: str) -> str:
    return f"{prefix}:sqlcounts"


def build_app(env: Mapping[str, str]) -> Celery:
    """The benchmark's app (worker and sender alike) configured from ``env``."""
    settings = Settings(
        database_url=env["DATAFORGE_DATABASE_URL"],
        redis_url=env["DATAFORGE_REDIS_URL"],
        celery_broker_url=env["DATAFORGE_CELERY_BROKER_URL"],
        celery_result_backend=env["DATAFORGE_CELERY_RESULT_BACKEND"],
        key_prefix=env["DATAFORGE_KEY_PREFIX"],
    )
    app = Celery("bench_worker")
    setup(app, settings, registry=TaskRegistry())
    broker_prefix = env["DATAFORGE_BENCH_BROKER_PREFIX"]
    app.conf.broker_transport_options["global_keyprefix"] = broker_prefix
    app.conf.result_backend_transport_options = {
        **(app.conf.result_backend_transport_options or {}),
        "global_keyprefix": broker_prefix,
    }

    # track_started=False is plain Celery's default; setup() turns it on app-wide, which
    # the DataForgeTask keeps (its STARTED write is part of what the library costs).
    @app.task(name=PLAIN, track_started=False, shared=False)
    def plain(n: int = 0) -> int:
        return n

    @app.task(base=DataForgeTask, bind=True, name=DATAFORGE, shared=False)
    def dataforge(self: DataForgeTask, scheduled_task_id: int | None = None, n: int = 0) -> int:
        task_log("run", n)
        return n

    if env.get(COUNT_VAR):
        _count_round_trips(redis_url=settings.effective_redis_url, prefix=settings.key_prefix)
    return app


def _count_round_trips(*, redis_url: str, prefix: str) -> None:
    """Count SQL statements, transactions and pool checkouts in every worker process."""
    sa.event.listen(sa.Engine, "before_cursor_execute", lambda *a, **k: _counts.update(["sql"]))
    sa.event.listen(sa.Engine, "commit", lambda *a: _counts.update(["commit"]))
    sa.event.listen(sa.Engine, "rollback", lambda *a: _counts.update(["rollback"]))
    sa.event.listen(sa.pool.Pool, "checkout", lambda *a: _counts.update(["checkout"]))

    def report(**_: Any) -> None:
        if _counts:
            client = redis.Redis.from_url(redis_url)
            for name, value in _counts.items():
                client.hincrby(counts_key(prefix), name, value)
            client.close()
            _counts.clear()

    # prefork children report from worker_process_shutdown, the solo pool from worker_shutdown
    signals.worker_process_shutdown.connect(report, weak=False)
    signals.worker_shutdown.connect(report, weak=False)


# ---------------------------------------------------------------- the measurement


def _seed_schedules(database_url: str, count: int) -> list[int]:
    """``count`` manual schedules (one lock scope each) in one multi-row INSERT."""
    engine = create_engine(database_url)
    create_all(engine)
    rows = [
        {"name": f"bench-{i:07d}", "task_type": "manual", "task_name": DATAFORGE}
        for i in range(count)
    ]
    table = metadata.tables[ScheduledTask.__tablename__]
    with engine.begin() as conn:
        ids = list(conn.scalars(sa.insert(table).returning(table.c.id), rows))
    engine.dispose()
    return ids


class Bench:
    """The sender side: queues batches, releases them to the worker, counts finished runs."""

    def __init__(self, app: Celery, database_url: str, client: redis.Redis) -> None:
        self.app = app
        self.client = client
        self.engine = create_engine(database_url)
        self.node = f"{NODE}@{socket.gethostname()}"

    def send(self, queue: str, *, plain: int, schedules: list[int], offset: int) -> list[str]:
        ids = [
            self.app.send_task(PLAIN, kwargs={"n": offset + n}, queue=queue).id
            for n in range(plain)
        ]
        ids += [
            self.app.send_task(
                DATAFORGE, kwargs={"scheduled_task_id": sid, "n": sid}, queue=queue
            ).id
            for sid in schedules
        ]
        return ids

    def plain_done(self, task_ids: list[str]) -> int:
        backend: Any = self.app.backend  # the Redis result backend names its keys
        keys = [backend.get_key_for_task(task_id) for task_id in task_ids]
        return int(self.client.exists(*keys)) if keys else 0

    def dataforge_done(self) -> int:
        query = sa.select(sa.func.count()).where(
            TaskExecution.status.in_(["success", "failed", "skipped"])
        )
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def consume(self, queue: str, *, on: bool) -> None:
        control: Callable[..., Any] = (
            self.app.control.add_consumer if on else self.app.control.cancel_consumer
        )
        replies = control(queue, reply=True, destination=[self.node], timeout=10)
        if not replies:
            raise RuntimeError(f"the worker did not answer {'add' if on else 'cancel'}_consumer")

    def timed(self, queue: str, done: Callable[[], int], target: int) -> float:
        """Release ``queue`` to the worker; seconds until ``done()`` reaches ``target``."""
        started = time.perf_counter()
        self.consume(queue, on=True)
        wait_for(lambda: done() >= target, timeout=600, interval=0.02, what=f"{queue} to drain")
        elapsed = time.perf_counter() - started
        self.consume(queue, on=False)
        return elapsed


def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = new_prefix("worker")
    url = redis_url()
    with (
        scratch_database() as database_url,
        redis_namespace(url, prefix) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        schedules = _seed_schedules(database_url, args.warmup + args.tasks)
        env = service_env(database_url=database_url, redis=url, prefix=prefix, **{COUNT_VAR: "1"})
        sender_env = {key: value for key, value in env.items() if key != COUNT_VAR}
        app = build_app(sender_env)
        bench = Bench(app, database_url, client)
        pool = ["-P", args.pool] + (["-c", str(args.concurrency)] if args.pool != "solo" else [])
        worker = Worker(
            "worker_overhead",
            env=env,
            log_path=Path(tmp) / "worker.log",
            args=[*pool, "-n", f"{NODE}@%h", "-Q", WARM_QUEUE],
        )
        try:
            worker.start()
            results = _measure(bench, args, schedules)
        finally:
            worker.stop()
            bench.engine.dispose()
        raw = client.hgetall(counts_key(prefix))
        counted = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        results["round_trips"] = counted
        results["runs_counted"] = args.warmup + args.tasks
        app.close()
    return results


def _measure(bench: Bench, args: argparse.Namespace, schedules: list[int]) -> dict[str, Any]:
    warm, timed = schedules[: args.warmup], schedules[args.warmup :]
    warm_ids = bench.send(WARM_QUEUE, plain=args.warmup, schedules=warm, offset=0)
    plain_warm = warm_ids[: args.warmup]
    wait_for(
        lambda: bench.plain_done(plain_warm) >= args.warmup and bench.dataforge_done() >= len(warm),
        timeout=120,
        what="the warm-up runs",
    )
    plain_ids = bench.send("bench.plain", plain=args.tasks, schedules=[], offset=args.warmup)
    bench.send("bench.dataforge", plain=0, schedules=timed, offset=0)
    plain_s = bench.timed("bench.plain", lambda: bench.plain_done(plain_ids), args.tasks)
    df_s = bench.timed("bench.dataforge", bench.dataforge_done, len(schedules))
    with bench.engine.connect() as conn:
        table = metadata.tables[TaskExecution.__tablename__]
        query = sa.select(table.c.status, sa.func.count()).group_by(table.c.status)
        statuses = {str(status): int(count) for status, count in conn.execute(query).all()}
    return {"plain_s": plain_s, "df_s": df_s, "statuses": statuses}


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    n = args.tasks
    plain_rate, df_rate = n / results["plain_s"], n / results["df_s"]
    pool = args.pool if args.pool == "solo" else f"{args.pool}, concurrency {args.concurrency}"
    print(f"worker: {pool}; {n} tasks of each kind, queued first ({machine()})")
    print(f"plain Celery task:        {plain_rate:8.0f} tasks/s  ({results['plain_s']:.2f} s)")
    print(f"DataForgeTask:            {df_rate:8.0f} tasks/s  ({results['df_s']:.2f} s)")
    slots = 1 if args.pool == "solo" else args.concurrency
    extra_ms = slots * (1 / df_rate - 1 / plain_rate) * 1000
    print(f"ratio plain/DataForgeTask: {plain_rate / df_rate:.2f}x")
    print(f"added cost per run:        {extra_ms:.2f} ms of a worker process")
    statuses = ", ".join(f"{status} {count}" for status, count in results["statuses"].items())
    print(f"execution rows by status:  {statuses}")
    counted, runs = results["round_trips"], results["runs_counted"]
    if counted.get("sql"):
        per = {name: counted.get(name, 0) / runs for name in ("sql", "commit", "checkout")}
        print(
            f"database per DataForgeTask run: {per['sql']:.2f} statements, "
            f"{per['commit']:.2f} commits, {per['checkout']:.2f} pool checkouts "
            f"(each checkout pings: pool_pre_ping)"
        )
    else:
        print("database round trips: not reported by the worker (no shutdown signal seen)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks of each kind")
    parser.add_argument("--warmup", type=int, default=50, help="untimed runs of each kind")
    parser.add_argument("--pool", choices=["prefork", "solo"], default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    report(args, run(args))
    return 0


def __getattr__(name: str) -> Any:
    # `celery -A worker_overhead` reads `app`: build it from the worker's environment, once.
    if name == "app":
        built = build_app(os.environ)
        globals()["app"] = built
        return built
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
