"""Worker overhead: tasks/s of a plain Celery task vs the same task as a DataForgeTask.

One real worker process (prefork, concurrency 2 by default; ``--pool solo``) on real
Redis (broker and result backend) and a scratch PostgreSQL database runs rounds of N tasks
of each kind: in every round a batch of plain tasks and a batch of DataForgeTasks, their
order alternating from round to round, so both kinds meet the same machine. Each batch is
queued first on a queue the worker does not consume, then the worker is told to consume
it (``add_consumer``) and the clock runs until every task finished: for the plain task
until its N results are in the result backend, for the DataForgeTask until its N
``task_executions`` rows are ``success`` in PostgreSQL (history is part of the job). A
DataForgeTask run is the real per-run path: its own schedule (one lock scope each), the
Redis lock, one ``task_log`` line, the history row with every field, the live log ended.

The figures are the median rate of each kind over the rounds and their ratio
(DataForgeTask / plain), printed last, then the cost per DataForgeTask run, each beside
the plain task's: CPU seconds in the pool processes and in the worker's main process
(where the history writer runs), in the Redis server and in PostgreSQL (when they run
on this host: every ``postgres`` process, so other databases' work counts too), SQL
statements and commits in the worker (pool
processes and main process separately), and Redis commands by kind (``INFO
commandstats``, every client of the Redis: the worker, its writer and the broker).

    python bench/worker_overhead.py [--tasks 2000] [--rounds 3] [--pool prefork|solo]
                                    [--no-track-started]

``setup()`` turns ``task_track_started`` on, and Celery's STARTED write is two Redis
round trips in the pool process (it reads the stored state before it writes one);
``--no-track-started`` measures a host that turns it off (a DataForgeTask's run is
``running`` in its history either way).

This module is also the worker's app (``celery -A worker_overhead``), built from the
environment on first access to ``app``.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
UNTRACKED_VAR = "DATAFORGE_BENCH_NO_TRACK_STARTED"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
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
        log_console_echo=False,
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
    # the DataForgeTask keeps (its STARTED write is part of what the library costs)
    # unless --no-track-started measures a host that turns it off
    if env.get(UNTRACKED_VAR):
        app.conf.task_track_started = False

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
    """Count SQL statements and commits per process kind (pool process or main process),
    reported to Redis when each process shuts down. Plain tasks run no SQL, so every
    statement counted belongs to a DataForgeTask run."""
    main_pid = os.getpid()

    def where() -> str:
        return "main" if os.getpid() == main_pid else "pool"

    sa.event.listen(
        sa.Engine, "before_cursor_execute", lambda *a, **k: _counts.update([f"{where()}:sql"])
    )
    sa.event.listen(sa.Engine, "commit", lambda *a: _counts.update([f"{where()}:commit"]))

    def report(**_: Any) -> None:
        if _counts:
            client = redis.Redis.from_url(redis_url)
            for name, value in _counts.items():
                client.hincrby(counts_key(prefix), name, value)
            client.close()
            _counts.clear()

    # prefork children report from worker_process_shutdown, the main process (and the solo
    # pool) from worker_shutdown
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


@dataclass
class Cost:
    """What one timed batch cost: seconds, CPU of pool and main processes, Redis commands."""

    seconds: float
    pool_cpu: float
    main_cpu: float
    redis_cpu: float
    postgres_cpu: float
    redis: collections.Counter[str] = field(default_factory=collections.Counter)


class Bench:
    """The sender side: queues batches, releases them to the worker, counts finished runs."""

    def __init__(
        self, app: Celery, database_url: str, client: redis.Redis, worker: Worker, prefix: str
    ) -> None:
        self.app = app
        self.client = client
        self.worker = worker
        self.prefix = prefix
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
        query = sa.select(sa.func.count()).where(TaskExecution.status == "success")
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def consume(self, queue: str, *, on: bool) -> None:
        control: Callable[..., Any] = (
            self.app.control.add_consumer if on else self.app.control.cancel_consumer
        )
        replies = control(queue, reply=True, destination=[self.node], timeout=10)
        if not replies:
            raise RuntimeError(f"the worker did not answer {'add' if on else 'cancel'}_consumer")

    def timed(self, queue: str, done: Callable[[], int], target: int) -> Cost:
        """Release ``queue`` to the worker; what it cost until ``done()`` reaches ``target``."""
        pool_before, main_before = self.cpu()
        servers_before = self.server_cpu()
        redis_before = self.commandstats()
        started = time.perf_counter()
        self.consume(queue, on=True)
        wait_for(lambda: done() >= target, timeout=600, interval=0.02, what=f"{queue} to drain")
        elapsed = time.perf_counter() - started
        self.consume(queue, on=False)
        pool_after, main_after = self.cpu()
        servers_after = self.server_cpu()
        return Cost(
            seconds=elapsed,
            pool_cpu=pool_after - pool_before,
            main_cpu=main_after - main_before,
            redis_cpu=servers_after[0] - servers_before[0],
            postgres_cpu=servers_after[1] - servers_before[1],
            redis=self.commandstats() - redis_before,
        )

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the pool processes and by the main process."""
        assert self.worker.proc is not None
        main = self.worker.proc.pid  # ``python -m celery worker``: the main process itself
        children = subprocess.run(
            ["pgrep", "-P", str(main)], capture_output=True, text=True, check=False
        ).stdout.split()
        return sum(_cpu(int(pid)) for pid in children), _cpu(main)

    def server_cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the Redis server (``INFO cpu``) and by every
        PostgreSQL process of this machine (0 when they run elsewhere)."""
        info: dict[str, Any] = self.client.info("cpu")
        redis_cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        pids = subprocess.run(
            ["pgrep", "-x", "postgres"], capture_output=True, text=True, check=False
        ).stdout.split()
        return redis_cpu, sum(_cpu(int(pid)) for pid in pids)

    def commandstats(self) -> collections.Counter[str]:
        stats: dict[str, Any] = self.client.info("commandstats")
        return collections.Counter(
            {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
        )

    def sql_counts(self) -> collections.Counter[str]:
        raw = self.client.hgetall(counts_key(self.prefix))
        return collections.Counter(
            {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        )


def _cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = new_prefix("worker")
    url = redis_url()
    with (
        scratch_database() as database_url,
        redis_namespace(url, prefix) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        schedules = _seed_schedules(database_url, args.warmup + args.rounds * args.tasks)
        extra = {COUNT_VAR: "1"} | ({UNTRACKED_VAR: "1"} if args.no_track_started else {})
        env = service_env(database_url=database_url, redis=url, prefix=prefix, **extra)
        sender_env = {key: value for key, value in env.items() if key != COUNT_VAR}
        app = build_app(sender_env)
        pool = ["-P", args.pool] + (["-c", str(args.concurrency)] if args.pool != "solo" else [])
        worker = Worker(
            "worker_overhead",
            env=env,
            log_path=Path(tmp) / "worker.log",
            args=[*pool, "-n", f"{NODE}@%h", "-Q", WARM_QUEUE],
        )
        bench = Bench(app, database_url, client, worker, prefix)
        try:
            worker.start()
            results = _measure(bench, args, schedules)
        finally:
            worker.stop()
            bench.engine.dispose()
        results["sql"] = bench.sql_counts()
        results["dataforge_runs"] = len(schedules)
        app.close()
    return results


def _measure(bench: Bench, args: argparse.Namespace, schedules: list[int]) -> dict[str, Any]:
    warm, rest = schedules[: args.warmup], schedules[args.warmup :]
    warm_ids = bench.send(WARM_QUEUE, plain=args.warmup, schedules=warm, offset=0)
    plain_warm = warm_ids[: args.warmup]
    wait_for(
        lambda: bench.plain_done(plain_warm) >= args.warmup and bench.dataforge_done() >= len(warm),
        timeout=120,
        what="the warm-up runs",
    )
    plain_costs: list[Cost] = []
    df_costs: list[Cost] = []
    finished = len(warm)
    for number in range(args.rounds):
        batch = rest[number * args.tasks : (number + 1) * args.tasks]
        plain_queue, df_queue = f"bench.plain.{number}", f"bench.df.{number}"
        plain_ids = bench.send(plain_queue, plain=args.tasks, schedules=[], offset=finished)
        bench.send(df_queue, plain=0, schedules=batch, offset=0)
        target = finished + len(batch)

        def time_plain(ids: list[str] = plain_ids, queue: str = plain_queue) -> None:
            plain_costs.append(bench.timed(queue, lambda: bench.plain_done(ids), args.tasks))

        def time_df(queue: str = df_queue, goal: int = target) -> None:
            df_costs.append(bench.timed(queue, bench.dataforge_done, goal))

        for step in (time_plain, time_df) if number % 2 == 0 else (time_df, time_plain):
            step()
        finished = target
    with bench.engine.connect() as conn:
        table = metadata.tables[TaskExecution.__tablename__]
        query = sa.select(table.c.status, sa.func.count()).group_by(table.c.status)
        statuses = {str(status): int(count) for status, count in conn.execute(query).all()}
    return {"plain": plain_costs, "dataforge": df_costs, "statuses": statuses}


def _per_run(costs: list[Cost], n: int) -> dict[str, float]:
    """Median per-run figures over the rounds."""
    redis_names = {name for cost in costs for name in cost.redis}
    figures = {
        "pool_cpu_ms": statistics.median(c.pool_cpu for c in costs) * 1000 / n,
        "main_cpu_ms": statistics.median(c.main_cpu for c in costs) * 1000 / n,
        "redis_cpu_ms": statistics.median(c.redis_cpu for c in costs) * 1000 / n,
        "postgres_cpu_ms": statistics.median(c.postgres_cpu for c in costs) * 1000 / n,
        "redis_total": statistics.median(sum(c.redis.values()) for c in costs) / n,
    }
    for name in redis_names:
        figures[f"redis:{name}"] = statistics.median(c.redis[name] for c in costs) / n
    return figures


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    n = args.tasks
    plain_rates = [n / cost.seconds for cost in results["plain"]]
    df_rates = [n / cost.seconds for cost in results["dataforge"]]
    plain_rate, df_rate = statistics.median(plain_rates), statistics.median(df_rates)
    pool = args.pool if args.pool == "solo" else f"{args.pool}, concurrency {args.concurrency}"
    if args.no_track_started:
        pool += "; task_track_started off"
    print(f"worker: {pool}; {args.rounds} rounds of {n} tasks of each kind ({machine()})")
    print(
        "plain Celery task, per round:  " + ", ".join(f"{r:.0f}" for r in plain_rates) + " tasks/s"
    )
    print("DataForgeTask, per round:      " + ", ".join(f"{r:.0f}" for r in df_rates) + " tasks/s")
    statuses = ", ".join(f"{status} {count}" for status, count in results["statuses"].items())
    print(f"execution rows by status:       {statuses}")
    plain, df = _per_run(results["plain"], n), _per_run(results["dataforge"], n)
    print("per run (median of rounds)            plain   DataForgeTask")
    rows = [
        ("CPU in pool processes, ms", "pool_cpu_ms"),
        ("CPU in the main process, ms", "main_cpu_ms"),
        ("CPU in the Redis server, ms", "redis_cpu_ms"),
        ("CPU in PostgreSQL (this host), ms", "postgres_cpu_ms"),
        ("Redis commands, all clients", "redis_total"),
    ]
    rows += [
        (f"  {name.removeprefix('redis:')}", name)
        for name in sorted({*plain, *df})
        if name.startswith("redis:") and max(plain.get(name, 0), df.get(name, 0)) >= 0.05
    ]
    for label, key in rows:
        print(f"  {label:<35} {plain.get(key, 0.0):7.2f}   {df.get(key, 0.0):7.2f}")
    runs = results["dataforge_runs"]
    for name, count in sorted(results["sql"].items()):
        place, kind = name.split(":")
        process = "pool processes" if place == "pool" else "the main process"
        print(f"  SQL {kind}s in {process:<21} {0.0:7.2f}   {count / runs:7.2f}")
    print(f"plain Celery task:         {plain_rate:8.0f} tasks/s (median)")
    print(f"DataForgeTask:             {df_rate:8.0f} tasks/s (median)")
    print(f"ratio DataForgeTask/plain: {df_rate / plain_rate:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks of each kind per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 2)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed runs of each kind")
    parser.add_argument("--pool", choices=["prefork", "solo"], default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--no-track-started",
        action="store_true",
        help="turn off task_track_started, as a host may (its STARTED write is 2 round trips)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the figure is a median")
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
