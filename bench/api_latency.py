"""API latency: p50/p99 of ``GET /tasks`` (a page of 50, and a search), ``GET /tasks/{id}``,
``GET /tasks/locks`` and ``GET /executions``, with each way of paging.

A page of 50 is measured four ways: the first page without a total (the default), the
same with ``count=true``, a random page by number with ``count=true`` (what every list
request cost before cursors and optional totals), and a random page by cursor. The runs
(``--executions``, inserted by one ``INSERT ... SELECT``) are paged the same ways.

Creates a scratch PostgreSQL database, writes 10,000 schedules through the store, serves
the API with uvicorn on a loopback port and times sequential requests from one httpx
client (so the figures are per-request latency, not throughput). For the lock listing,
20 locks are held among ``--noise-keys`` other keys under the same prefix (a busy
Redis). The database and the Redis keys are removed afterwards.

    python bench/api_latency.py [--schedules 10000] [--executions 200000] [--requests 500]
                                [--noise-keys 100000]

``DATAFORGE_BENCH_DATABASE_URL`` (an admin URL; default the local ``postgres`` database)
and ``DATAFORGE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) pick the services.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn

from dataforge_scheduler.api import create_app
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import create_engine
from dataforge_scheduler.sql.models import create_all

ADMIN_URL = os.environ.get(
    "DATAFORGE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DATAFORGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "bench-key-0123456789"
TASKS = ("bench.sync", "bench.report", "bench.cleanup")


@contextmanager
def scratch_database() -> Iterator[str]:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"dataforge_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed(runtime: Runtime, count: int) -> list[int]:
    now = datetime.now(UTC)
    ids: list[int] = []
    kinds = [
        {"task_type": "interval", "interval_seconds": 3600},
        {"task_type": "cron", "cron_expression": "*/15 * * * *", "timezone": "Asia/Shanghai"},
        {"task_type": "manual"},
    ]
    with runtime.session() as session:
        for index in range(count):
            fields = {
                "name": f"schedule-{index:05d}",
                "description": f"bench schedule {index}",
                "task_name": TASKS[index % len(TASKS)],
                **kinds[index % len(kinds)],
            }
            row = store.create_schedule(session, fields, now=now, default_timezone="UTC")
            ids.append(row.id)
    return ids


def seed_runs(runtime: Runtime, count: int, schedule_ids: list[int]) -> None:
    """``count`` finished runs spread over the schedules and the last 30 days."""
    statement = sa.text(
        """
        INSERT INTO task_executions (scheduled_task_id, task_name, celery_task_id, "trigger",
                                     status, created_at, started_at, finished_at, kwargs)
        SELECT (:first + n % :spread), 'bench.sync', 'bench-' || n, 'schedule',
               CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'success' END,
               now() - make_interval(secs => n * 13), now() - make_interval(secs => n * 13),
               now() - make_interval(secs => n * 13 - 1), '{}'
        FROM generate_series(1, :count) AS n
        """
    )
    with runtime.engine.begin() as connection:
        connection.execute(
            statement, {"first": schedule_ids[0], "spread": len(schedule_ids), "count": count}
        )
        connection.execute(sa.text("ANALYZE task_executions"))


def cursors(client: httpx.Client, path: str, pages: int) -> list[str]:
    """The ``next_cursor`` of each of the first ``pages`` pages of 50."""
    found: list[str] = []
    cursor: str | None = None
    for _ in range(pages):
        params: dict[str, Any] = {"page_size": 50}
        if cursor is not None:
            params["cursor"] = cursor
        cursor = client.get(path, params=params).raise_for_status().json()["next_cursor"]
        if cursor is None:
            break
        found.append(cursor)
    return found


def paged(
    client: httpx.Client, path: str, pages: int, requests: int, rng: random.Random
) -> dict[str, tuple[float, float]]:
    walk = cursors(client, path, pages)
    return {
        "first page": measure(requests, lambda: client.get(path, params={"page_size": 50})),
        "first page, count=true": measure(
            requests, lambda: client.get(path, params={"page_size": 50, "count": "true"})
        ),
        "random page number, count=true": measure(
            requests,
            lambda: client.get(
                path, params={"page": rng.randint(1, pages), "page_size": 50, "count": "true"}
            ),
        ),
        "random page by cursor": measure(
            requests,
            lambda: client.get(path, params={"cursor": rng.choice(walk), "page_size": 50}),
        ),
    }


@contextmanager
def served(app: Any) -> Iterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def measure(requests: int, call: Callable[[], httpx.Response]) -> tuple[float, float]:
    for _ in range(20):  # warm the pools and the statement cache
        call().raise_for_status()
    timings: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        call().raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(timings, n=100)
    return statistics.median(timings), cuts[98]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--executions", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--noise-keys", type=int, default=100_000)
    args = parser.parse_args(argv)

    registry = TaskRegistry()
    for task_name in TASKS:
        registry.register(task_name, name=task_name, category=task_name.split(".")[1])
    with scratch_database() as database_url:
        prefix = f"dfbench-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            database_url=database_url, redis_url=REDIS_URL, key_prefix=prefix, api_keys=[KEY]
        )
        runtime = Runtime(settings, registry=registry, engine=create_engine(database_url))
        create_all(runtime.engine)
        started = time.perf_counter()
        ids = seed(runtime, args.schedules)
        seed_runs(runtime, args.executions, ids)
        print(
            f"seeded {len(ids)} schedules and {args.executions} runs in "
            f"{time.perf_counter() - started:.1f} s"
        )
        pages = max(1, len(ids) // 50)
        rng = random.Random(5)
        try:
            hold_locks(runtime, ids[:20], noise=args.noise_keys, prefix=prefix)
            with (
                served(create_app(runtime)) as url,
                httpx.Client(base_url=url, headers={"X-API-Key": KEY}) as client,
            ):
                task_pages = paged(client, "/tasks", pages, args.requests, rng)
                run_pages = paged(
                    client, "/executions", max(1, args.executions // 50), args.requests, rng
                )
                one = measure(args.requests, lambda: client.get(f"/tasks/{rng.choice(ids)}"))
                search = measure(
                    args.requests,
                    lambda: client.get("/tasks", params={"search": f"-{rng.randint(0, 9999):04d}"}),
                )
                locks = measure(args.requests, lambda: client.get("/tasks/locks"))
        finally:  # whatever failed, no key of this run stays behind
            runtime.close()
            runtime_redis_cleanup(prefix)
    for path, rows, figures in (
        ("/tasks", f"{len(ids)} schedules", task_pages),
        ("/executions", f"{args.executions} runs", run_pages),
    ):
        for how, (p50, p99) in figures.items():
            print(f"GET {path} (page of 50 of {rows}), {how}: p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    print(
        f"GET /tasks/{{id}}:                               p50 {one[0]:.2f} ms  p99 {one[1]:.2f} ms"
    )
    print(
        f"GET /tasks?search=<4 digits>:                  p50 {search[0]:.2f} ms  "
        f"p99 {search[1]:.2f} ms"
    )
    print(
        f"GET /tasks/locks (20 held, {args.noise_keys} other keys): p50 {locks[0]:.2f} ms  "
        f"p99 {locks[1]:.2f} ms"
    )
    print(f"load average: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")
    return 0


def hold_locks(runtime: Runtime, schedule_ids: list[int], *, noise: int, prefix: str) -> None:
    import redis

    from dataforge_scheduler.core.values import LockOwner
    from dataforge_scheduler.redis.keys import schedule_scope

    client = redis.Redis.from_url(REDIS_URL)
    for start in range(0, noise, 10_000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(noise, start + 10_000)):
            pipe.set(f"{prefix}:noise:{n}", "x")
        pipe.execute()
    client.close()
    for schedule_id in schedule_ids:
        owner = LockOwner(celery_task_id=f"bench-{schedule_id}", execution_id=None)
        runtime.locks.acquire(schedule_scope(schedule_id), owner, ttl=3600)


def runtime_redis_cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


if __name__ == "__main__":
    sys.exit(main())
