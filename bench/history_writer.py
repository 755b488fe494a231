"""History writer: how fast one writer drains the outbox into PostgreSQL, and its CPU.

Fills the outbox of a scratch Redis prefix with N short runs, each a start record and a
final end record (with a result and a one-line log), as ``RunJournal.start`` and
``RunJournal.finish`` append them for a DataForgeTask run; half the runs belong to one of
20 schedules (so the counters are updated too). Then one ``HistoryWriter`` drains it in
this process, and the figures are its rate (runs/s), the CPU it spent per run (this
process only: PostgreSQL's and Redis's own CPU is not in it), and the statements and
commits it sent per run. ``--profile`` prints the writer's top functions (cProfile).

    python bench/history_writer.py [--runs 20000] [--batch 500] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import time
from datetime import timedelta

import sqlalchemy as sa
from _common import machine, new_prefix, redis_namespace, redis_url, scratch_database

from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.journal import FinishRecord, StartRecord
from dataforge_scheduler.history import HistoryWriter
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import create_all

SCHEDULES = 20


def _fill(runtime: Runtime, runs: int, schedule_ids: list[int]) -> None:
    journal = runtime.backend.journal
    base = utcnow()
    for n in range(runs):
        at = base + timedelta(milliseconds=n)
        schedule_id = schedule_ids[n % len(schedule_ids)] if n % 2 == 0 else None
        run_id = f"bench-{n:08d}"
        kwargs = {"n": n} if schedule_id is None else {"n": n, "scheduled_task_id": schedule_id}
        journal.start(
            StartRecord(
                celery_task_id=run_id,
                task_name="bench.task",
                scheduled_task_id=schedule_id,
                trigger="external",
                worker_hostname="bench@host",
                worker_pid=1,
                kwargs=kwargs,
                retries=0,
                at=at,
            ),
            lock=None,
            state_ttl=600,
        )
        journal.finish(
            FinishRecord(
                celery_task_id=run_id,
                status=ExecutionStatus.SUCCESS,
                at=at + timedelta(milliseconds=3),
                result=n,
                attempt=0,
                log="run " + str(n),
            ),
            log_lines=["run " + str(n)],
            log_ttl=600,
            lock=None,
            state_ttl=600,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500, help="history_batch_size")
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    args = parser.parse_args(argv)
    prefix = new_prefix("writer")
    with scratch_database() as database_url, redis_namespace(redis_url(), prefix):
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url(),
            key_prefix=prefix,
            history_batch_size=args.batch,
            history_linger_seconds=0,
        )
        runtime = Runtime(settings, registry=TaskRegistry())
        try:
            create_all(runtime.engine)
            with runtime.session() as session:
                schedule_ids = [
                    store.create_schedule(
                        session,
                        {"name": f"bench-{i}", "task_name": "bench.task", "task_type": "manual"},
                        now=utcnow(),
                        default_timezone="UTC",
                    ).id
                    for i in range(SCHEDULES)
                ]
            _fill(runtime, args.runs, schedule_ids)
            counts: collections.Counter[str] = collections.Counter()
            sa.event.listen(
                runtime.engine, "before_cursor_execute", lambda *a, **k: counts.update(["sql"])
            )
            sa.event.listen(runtime.engine, "commit", lambda *a: counts.update(["commit"]))
            writer = HistoryWriter(runtime)
            profiler = cProfile.Profile() if args.profile else None
            wall, cpu = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            while writer.run_once():
                pass
            if profiler is not None:
                profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            with runtime.session() as session:
                done = session.scalar(
                    sa.text("SELECT count(*) FROM task_executions WHERE status = 'success'")
                )
                counted = session.scalar(sa.text("SELECT sum(run_count) FROM scheduled_tasks"))
        finally:
            runtime.close()
    runs = args.runs
    print(f"history writer: {runs} runs ({2 * runs} records), batch {args.batch} ({machine()})")
    print(f"rows written:                 {done} success, schedule run_count total {counted}")
    print(
        f"SQL per run:                  {counts['sql'] / runs:.3f} statements, "
        f"{counts['commit'] / runs:.4f} commits"
    )
    print(f"writer CPU per run, ms:       {1000 * cpu / runs:.3f}")
    print(f"drain rate:                   {runs / wall:.0f} runs/s")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    return 0 if done == runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
