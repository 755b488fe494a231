"""Scheduler scale: what a DatabaseScheduler pass costs at 1k to 1M schedules.

For each size a scratch PostgreSQL database gets N interval schedules (one COPY, then
ANALYZE), all next due one to two hours from now. The scheduler then runs in a child
process of its own (so its peak RSS is its own) and measures:

- idle tick: one ``run_pass(now)`` when nothing is due (median and p95 of many);
- change to send: the real ``tick()`` loop waits in a thread while this process commits
  a configuration change through the store (the row's ``start_at`` moved so its next
  slot is 1 ms away) and publishes the schedule-change notice, as the API does; the
  figure runs from the start of that transaction until the scheduler handed the slot
  to the dispatcher;
- claim and send 1,000 due slots: 1,000 of the rows share one slot; passes at that
  instant (on time, no misfire) until all are claimed and sent, through a real
  ``CeleryDispatcher`` to Redis (``--recording``: a dispatcher that only records, to
  leave the broker out);
- backfill wait and send: 10 schedules each with 1,000 backfill slots waiting behind a
  run going: a pass then sends nothing (median of many); once the runs end, the one
  pass that sends the next slot of each;
- peak RSS (VmHWM) of the scheduler process.

    python bench/scheduler_scale.py [--sizes 1000,10000,100000] [--peer-python PATH]

Peers (django-celery-beat, sqlalchemy-celery-beat) are measured by ``_peers.py`` with
the interpreter of a separate virtualenv given by ``--peer-python``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from _common import (
    BENCH_DIR,
    machine,
    millis,
    new_prefix,
    peak_rss_mib,
    redis_namespace,
    redis_url,
    scratch_database,
    summary,
)
from _peers import PEERS, run_peers
from celery import Celery

from dataforge_scheduler.celery.beat import DatabaseScheduler
from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.core.messages import RunMessage, message_for
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.engine import create_engine
from dataforge_scheduler.sql.models import create_all
from dataforge_scheduler.wiring import setup

TASK = "bench.noop"
INTERVAL = 3600


# ---------------------------------------------------------------- loading (parent)


def load_schedules(database_url: str, count: int, *, due: int) -> datetime:
    """``count`` interval schedules by COPY. The first ``due`` share one slot an hour from
    now (returned); the others fall due between that slot and an hour later."""
    engine = create_engine(database_url)
    create_all(engine)
    rng = random.Random(7)
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=INTERVAL)
    columns = "name, task_type, task_name, interval_seconds, status, next_run_at, created_at"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY scheduled_tasks ({columns}) FROM STDIN") as copy:
            for index in range(count):
                offset = 0.0 if index < due else rng.uniform(1, INTERVAL)
                next_run_at = slot + timedelta(seconds=offset)
                # created_at anchors the grid: the row's next slot is one interval later
                anchor = next_run_at - timedelta(seconds=INTERVAL)
                row = (f"bench-{index:07d}", "interval", TASK, INTERVAL, "active")
                copy.write_row((*row, next_run_at, anchor))
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE scheduled_tasks"))
    engine.dispose()
    return slot


# ---------------------------------------------------------------- the scheduler (child)


class TimedDispatcher:
    """Forwards runs to ``inner`` (None: records only) and notes when each schedule's
    slot was handed over, so a waiting thread can time a change."""

    def __init__(self, inner: CeleryDispatcher | None) -> None:
        self.inner = inner
        self.sent = 0
        self.sent_at: dict[int, float] = {}
        self.changed = threading.Condition()

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        return message_for(run) if self.inner is None else self.inner.message_for(run)

    def batch(self) -> contextlib.AbstractContextManager[object]:
        batch = getattr(self.inner, "batch", None)  # one producer per pass, where offered
        return contextlib.nullcontext() if batch is None else batch()

    def dispatch(self, run: ClaimedSlot) -> RunMessage:
        message = self.message_for(run) if self.inner is None else self.inner.dispatch(run)
        with self.changed:
            self.sent += 1
            self.sent_at[int(run.kwargs["scheduled_task_id"])] = time.perf_counter()
            self.changed.notify_all()
        return message

    def cancel(self, celery_task_ids: Sequence[str], *, signal: str = "SIGTERM") -> None:
        if self.inner is not None:
            self.inner.cancel(celery_task_ids, signal=signal)

    def wait_for(self, schedule_id: int, *, timeout: float) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: schedule_id in self.sent_at, timeout=timeout):
                raise RuntimeError(f"schedule {schedule_id} was not sent within {timeout} s")
            return self.sent_at.pop(schedule_id)


def noop(**_: Any) -> None:
    """The task every benchmark schedule names (registered, never run here)."""


def build_scheduler(args: argparse.Namespace) -> tuple[DatabaseScheduler, TimedDispatcher]:
    url = redis_url()
    settings = Settings(
        database_url=args.database_url,
        redis_url=url,
        celery_broker_url=url,
        celery_result_backend=url,
        key_prefix=args.prefix,
    )
    app = Celery("bench_scheduler")
    runtime = setup(app, settings, registry=TaskRegistry())
    app.conf.broker_transport_options["global_keyprefix"] = f"{args.prefix}:broker:"
    app.task(name=TASK, shared=False)(noop)
    dispatcher = TimedDispatcher(None if args.recording else CeleryDispatcher(app))
    return DatabaseScheduler(app, runtime=runtime, dispatcher=dispatcher), dispatcher


def idle_ticks(scheduler: DatabaseScheduler, count: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``count`` idle passes (this process's CPU: the beat's)."""
    samples, cpu = [], []
    for _ in range(count):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = scheduler.run_pass()
        samples.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        if result.sent:
            raise RuntimeError("an idle pass sent something: the rows should not be due")
    return samples, cpu


BACKFILL_SCHEDULES = 10


def backfill_wait(scheduler: DatabaseScheduler, count: int) -> tuple[list[float], float]:
    """Seconds of ``count`` passes while ``BACKFILL_SCHEDULES`` schedules each have
    ``backfill_max_slots`` backfill slots waiting behind a run going (nothing is sent),
    then of the pass that sends the next slot of each once their runs ended (the
    claim's too, at the smallest size). The rows are deleted afterwards."""
    engine = scheduler.runtime.engine
    slots = scheduler.settings.backfill_max_slots
    # the last schedules: none of them shares the claim's slot
    last = "SELECT max(id) - :schedules FROM scheduled_tasks"
    mine = f"scheduled_task_id > ({last})"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO task_executions (scheduled_task_id, scheduled_for, task_name, "
                'celery_task_id, "trigger", status, created_at, kwargs) '
                "SELECT s.id, now() - interval '1 hour' * g, s.task_name, "
                "gen_random_uuid()::text, 'backfill', 'queued', now(), "
                "json_build_object('scheduled_task_id', s.id) "
                f"FROM scheduled_tasks s, generate_series(1, :slots) g WHERE s.id > ({last})"
            ),
            {"slots": slots, "schedules": BACKFILL_SCHEDULES},
        )
        connection.execute(
            sa.text(
                "INSERT INTO task_executions (scheduled_task_id, task_name, celery_task_id, "
                '"trigger", status, created_at, sent_at, started_at) '
                "SELECT id, task_name, gen_random_uuid()::text, 'manual', 'running', now(), "
                f"now(), now() FROM scheduled_tasks WHERE id > ({last})"
            ),
            {"schedules": BACKFILL_SCHEDULES},
        )
        connection.execute(sa.text("ANALYZE task_executions"))
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        result = scheduler.run_pass()
        samples.append(time.perf_counter() - started)
        if result.sent:
            raise RuntimeError("a backfill slot was sent while a run of its schedule went on")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE task_executions SET status = 'success', finished_at = now() "
                f"WHERE status IN ('pending', 'running') AND {mine}"
            ),
            {"schedules": BACKFILL_SCHEDULES},
        )
    started = time.perf_counter()
    result = scheduler.run_pass()
    sending = time.perf_counter() - started
    if len(result.sent) != BACKFILL_SCHEDULES:
        raise RuntimeError(f"{len(result.sent)} backfill slots sent, not {BACKFILL_SCHEDULES}")
    with engine.begin() as connection:
        connection.execute(
            sa.text(f"DELETE FROM task_executions WHERE {mine}"),
            {"schedules": BACKFILL_SCHEDULES},
        )
    return samples, sending


def change_to_send(
    scheduler: DatabaseScheduler, dispatcher: TimedDispatcher, *, size: int, trials: int
) -> list[float]:
    """Seconds from a committed change (plus its notice) until its slot was sent."""
    runtime: Runtime = scheduler.runtime
    stop = threading.Event()
    with dispatcher.changed:
        dispatcher.sent_at.clear()  # the claim's sends are not changes

    def loop() -> None:
        while not stop.is_set():
            scheduler.tick()

    thread = threading.Thread(target=loop, name="beat", daemon=True)
    thread.start()
    time.sleep(1.0)  # let the loop subscribe to the notices before the first change
    rng = random.Random(11)
    samples = []
    for schedule_id in rng.sample(range(1, size + 1), min(trials, size)):
        started = time.perf_counter()
        now = datetime.now(UTC)
        start_at = now - timedelta(seconds=INTERVAL) + timedelta(milliseconds=1)
        with runtime.session() as session:
            store.update_schedule(
                session, schedule_id, {"start_at": start_at}, now=now, default_timezone="UTC"
            )
        runtime.notices.publish(schedule_id)
        samples.append(dispatcher.wait_for(schedule_id, timeout=30) - started)
    stop.set()
    scheduler.close()  # ends the wait at once
    thread.join(timeout=10)
    return samples


def claim_and_send(
    scheduler: DatabaseScheduler, dispatcher: TimedDispatcher, *, due: int, slot: datetime
) -> float:
    """Seconds of the passes at ``slot``, when ``due`` rows are due on time, until all
    their slots are sent."""
    before = dispatcher.sent
    started = time.perf_counter()
    while scheduler.run_pass(slot).batch_full:
        pass
    elapsed = time.perf_counter() - started
    if dispatcher.sent - before != due:
        raise RuntimeError(f"{dispatcher.sent - before} slots were sent, not {due}")
    return elapsed


def child(args: argparse.Namespace) -> dict[str, Any]:
    scheduler, dispatcher = build_scheduler(args)
    scheduler.run_pass()  # connect, warm the statement cache
    baseline = peak_rss_mib()
    idle, idle_cpu = idle_ticks(scheduler, args.ticks)
    due = min(args.due, args.size)
    slot = datetime.fromisoformat(args.slot)
    if args.profile:  # where the claim's time goes: cProfile stats to a file
        import cProfile

        profile = cProfile.Profile()
        claim = profile.runcall(claim_and_send, scheduler, dispatcher, due=due, slot=slot)
        profile.dump_stats(f"{args.profile}.{args.size}")
    else:
        claim = claim_and_send(scheduler, dispatcher, due=due, slot=slot)
    waiting, backfill_send = backfill_wait(scheduler, args.ticks)
    changes = change_to_send(scheduler, dispatcher, size=args.size, trials=args.changes)
    scheduler.runtime.close()
    return {
        "idle": summary(idle),
        "idle_cpu": summary(idle_cpu),
        "backfill_wait": summary(waiting),
        "backfill_send_s": backfill_send,
        "change": summary(changes),
        "claim_s": claim,
        "due": due,
        "rss_baseline_mib": baseline,
        "rss_peak_mib": peak_rss_mib(),
    }


# ---------------------------------------------------------------- driver (parent)


def measure_size(args: argparse.Namespace, size: int) -> dict[str, Any]:
    prefix = new_prefix("scale")
    with scratch_database() as database_url, redis_namespace(redis_url(), prefix):
        started = time.perf_counter()
        slot = load_schedules(database_url, size, due=min(args.due, size))
        loaded = time.perf_counter() - started
        command = [
            sys.executable,
            str(BENCH_DIR / "scheduler_scale.py"),
            "--child",
            f"--database-url={database_url}",
            f"--prefix={prefix}",
            f"--size={size}",
            f"--ticks={args.ticks}",
            f"--changes={args.changes}",
            f"--due={args.due}",
            f"--slot={slot.isoformat()}",
            *(["--recording"] if args.recording else []),
            *([f"--profile={args.profile}"] if args.profile else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the scheduler process failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_s"] = loaded
    return result


def print_ours(args: argparse.Namespace, results: dict[int, dict[str, Any]]) -> None:
    sender = "recording dispatcher (no broker)" if args.recording else "CeleryDispatcher to Redis"
    print(f"DatabaseScheduler on PostgreSQL; claims sent through: {sender} ({machine()})")
    header = (
        f"{'schedules':>10} {'load':>7} {'idle p50':>9} {'idle p95':>9} {'idle cpu':>9} "
        f"{'change p50':>11} "
        f"{'change max':>11} {'1k due':>9} {'bf wait':>8} {'bf send':>8} {'RSS peak':>9}"
    )
    print(header)
    for size, r in results.items():
        print(
            f"{size:>10} {r['load_s']:>6.1f}s {millis(r['idle']['median']):>9} "
            f"{millis(r['idle']['p95']):>9} {millis(r['idle_cpu']['median']):>9} "
            f"{millis(r['change']['median']):>11} "
            f"{millis(r['change']['max']):>11} {millis(r['claim_s']):>9} "
            f"{millis(r['backfill_wait']['median']):>8} {millis(r['backfill_send_s']):>8} "
            f"{r['rss_peak_mib']:>7.1f}MB"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--ticks", type=int, default=200, help="idle passes timed per size")
    parser.add_argument("--changes", type=int, default=20, help="changes timed per size")
    parser.add_argument("--due", type=int, default=1000, help="due slots to claim and send")
    parser.add_argument("--recording", action="store_true", help="send to no broker")
    parser.add_argument("--peer-python", help="python of a virtualenv holding the peers")
    parser.add_argument("--peer-sizes", default="1000,10000")
    parser.add_argument(
        "--peer-changes", type=int, default=5, help="reloads timed per peer and size"
    )
    parser.add_argument("--profile", help="write cProfile stats of the 1k claim to PROFILE.<size>")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slot", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ours = {size: measure_size(args, size) for size in sizes}
    print_ours(args, ours)
    peer_sizes = [int(s) for s in args.peer_sizes.split(",") if s]
    run_peers(args.peer_python, peer_sizes, ours, ticks=args.ticks, changes=args.peer_changes)
    if args.peer_python is None:
        print(f"(peers checked: {', '.join(PEERS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
