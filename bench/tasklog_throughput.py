"""``task_log`` throughput: lines/s with batching vs one push per line, on real Redis.

One DataForgeTask runs in this process through Celery's own tracer (``Task.apply``), so
the run is set up exactly as in a worker: the signal handlers write its ``running`` row
in a scratch PostgreSQL database, bind the run context with its log buffer and the
per-process flusher, take its lock in Redis, and at the end store ``log_output``. Its
body calls ``task_log`` N times; the figure is N divided by the time the body spent in
those calls. Two apps differ only in ``log_flush_lines``: the default (100 lines per
round trip, plus the ``log_flush_interval`` timer) and 1 (every line pushed at once,
as an unbatched implementation would). Afterwards the bus must hold all N lines of each
run, and ``log_output`` must hold them too.

    python bench/tasklog_throughput.py [--lines 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from _common import machine, new_prefix, redis_namespace, redis_url, scratch_database
from celery import Celery

from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.core.context import current_run
from dataforge_scheduler.history import HistoryWriter
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import create_all
from dataforge_scheduler.wiring import setup

TASK = "bench.chatty"


def build_app(database_url: str, prefix: str, *, flush_lines: int) -> tuple[Celery, Runtime]:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url(),
        celery_broker_url="memory://",  # Task.apply() runs in this process: no broker
        celery_result_backend="cache+memory://",
        key_prefix=prefix,
        log_flush_lines=flush_lines,
        log_console_echo=False,  # 50,000 lines on the terminal would measure the terminal
        log_max_bytes=64 * 1024 * 1024,  # keep every line: the default cap is 1 MiB
    )
    app = Celery(f"bench_tasklog_{flush_lines}")
    runtime = setup(app, settings, registry=TaskRegistry())

    @app.task(base=DataForgeTask, bind=True, name=TASK, shared=False)
    def chatty(self: DataForgeTask, lines: int = 0) -> dict[str, Any]:
        run = current_run()
        started = time.perf_counter()
        for number in range(lines):
            task_log("line", number, "of the benchmark run")
        elapsed = time.perf_counter() - started
        return {"seconds": elapsed, "run_id": run.celery_task_id if run else None}

    return app, runtime


def measure(database_url: str, prefix: str, *, lines: int, flush_lines: int) -> dict[str, Any]:
    app, runtime = build_app(database_url, prefix, flush_lines=flush_lines)
    try:
        app.tasks[TASK].apply(kwargs={"lines": 200})  # warm: connections, statement cache
        outcome = app.tasks[TASK].apply(kwargs={"lines": lines}).get()
        run_id = outcome["run_id"]
        if run_id is None:
            raise RuntimeError("the task ran outside a DataForgeTask run")
        writer = HistoryWriter(runtime)  # a worker's writer would apply the run's records
        while writer.run_once():
            pass
        in_bus = runtime.logbus.length(run_id)
        with runtime.session() as session:
            row = store.get_execution_by_celery_id(session, run_id)
            if row is None:
                raise RuntimeError("the run has no execution row: was the database reachable?")
            stored = len((row.log_output or "").split("\n")) if row.log_output else 0
            status = row.status.value
    finally:
        runtime.close()
        app.close()
    if (in_bus, stored, status) != (lines, lines, "success"):
        raise RuntimeError(f"lost lines: bus {in_bus}, log_output {stored}, status {status}")
    return {"seconds": outcome["seconds"], "rate": lines / outcome["seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=Settings().log_flush_lines)
    args = parser.parse_args(argv)
    prefix = new_prefix("tasklog")
    with scratch_database() as database_url, redis_namespace(redis_url(), prefix):
        engine_runtime = Runtime(Settings(database_url=database_url))
        create_all(engine_runtime.engine)
        engine_runtime.close()
        batched = measure(database_url, prefix, lines=args.lines, flush_lines=args.batch)
        single = measure(database_url, prefix, lines=args.lines, flush_lines=1)
    print(f"task_log: {args.lines} lines per run on real Redis, all found in the bus ({machine()})")
    for label, figures in (
        (f"batched (log_flush_lines={args.batch})", batched),
        ("one push per line (log_flush_lines=1)", single),
    ):
        print(f"{label:<40} {figures['rate']:>9.0f} lines/s ({figures['seconds']:.2f} s)")
    print(f"ratio batched/one-by-one: {batched['rate'] / single['rate']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
