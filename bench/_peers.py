"""The peers of ``scheduler_scale.py``: django-celery-beat and sqlalchemy-celery-beat.

Each peer is measured the way it runs: its ``DatabaseScheduler`` keeps the enabled rows
in memory and Celery's base ``tick()`` drives it. For N interval schedules (every hour,
in a scratch database on the same PostgreSQL) this reports the start-up load, the idle
tick (nothing due: the peer's change check plus Celery's ``schedules_equal`` walk) and
the reload tick (the first tick after one row changed through the peer's own change
marker: a full re-read of the table and a rebuilt heap). A change also waits for that
tick: the peers sleep up to ``beat_max_loop_interval`` (5 s by default) between ticks.

The measuring half runs under the peers' virtualenv (``--peer-python``), so it imports
only the standard library, Celery, SQLAlchemy and the peer, never dataforge_scheduler:

    /tmp/peers/bin/python bench/_peers.py django --database-url URL --size 1000
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PEERS = {"django_celery_beat": "django", "sqlalchemy_celery_beat": "sqlalchemy"}
TASK = "bench.noop"
HOUR = 3600
VENV_HINT = (
    "python3 -m venv /tmp/peers && /tmp/peers/bin/pip install django-celery-beat "
    "sqlalchemy-celery-beat psycopg2-binary"
)


# ---------------------------------------------------------------- driver (our venv)


def run_peers(
    peer_python: str | None,
    sizes: list[int],
    ours: dict[int, dict[str, Any]],
    *,
    ticks: int,
    changes: int,
) -> None:
    """Measure each installed peer at ``sizes`` and print it beside our figures."""
    from _common import millis, scratch_database

    for module, kind in PEERS.items():
        if peer_python is None or not _importable(peer_python, module):
            where = "no --peer-python given" if peer_python is None else f"not in {peer_python}"
            print(
                f"peer {module} not installed ({where}): skipped "
                f"(create a venv with `{VENV_HINT}` and pass --peer-python /tmp/peers/bin/python)"
            )
            continue
        print(f"peer {module} (same PostgreSQL, same rows; ratio = peer / DatabaseScheduler):")
        for size in sizes:
            with scratch_database() as database_url:
                peer = _run(peer_python, kind, database_url, size, ticks=ticks, changes=changes)
            idle, reload = peer["idle"]["median"], peer["reload"]["median"]
            line = (
                f"  {size:>8} schedules: load {peer['load_s']:.2f} s, idle tick {millis(idle)}, "
                f"reload tick {millis(reload)}, RSS peak {peer['rss_peak_mib']:.1f} MB"
            )
            mine = ours.get(size)
            if mine is not None:
                line += (
                    f"; idle x{idle / mine['idle']['median']:.1f}, "
                    f"change x{reload / mine['change']['median']:.1f} (+ up to 5 s sleep), "
                    f"RSS x{peer['rss_peak_mib'] / mine['rss_peak_mib']:.1f}"
                )
            print(line)


def _importable(python: str, module: str) -> bool:
    probe = [python, "-c", f"import {module}"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _run(
    python: str, kind: str, database_url: str, size: int, *, ticks: int, changes: int
) -> dict[str, Any]:
    command = [
        python,
        str(Path(__file__).resolve()),
        kind,
        f"--database-url={database_url}",
        f"--size={size}",
        f"--ticks={ticks}",
        f"--changes={changes}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"peer {kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- measuring (peers' venv)


def measure(
    make: Callable[[], Any], change: Callable[[int], None], *, ticks: int, changes: int
) -> dict[str, Any]:
    from _common import peak_rss_mib, summary

    started = time.perf_counter()
    scheduler = make()
    loaded = time.perf_counter() - started
    scheduler.tick()  # the first tick builds the heap
    idle = []
    for _ in range(ticks):
        started = time.perf_counter()
        scheduler.tick()
        idle.append(time.perf_counter() - started)
    reload = []
    for number in range(changes):
        change(number)
        started = time.perf_counter()
        scheduler.tick()
        reload.append(time.perf_counter() - started)
    return {
        "load_s": loaded,
        "idle": summary(idle),
        "reload": summary(reload),
        "rss_peak_mib": peak_rss_mib(),
    }


def _celery_app() -> Any:
    from celery import Celery

    return Celery("peer", broker="memory://")


def _module(name: str) -> Any:
    # the peers are not dependencies of this project: imported by name, typed as Any
    return importlib.import_module(name)


def django_peer(database_url: str, size: int, *, ticks: int, changes: int) -> dict[str, Any]:
    django = _module("django")
    parts = urlsplit(database_url)
    _module("django.conf").settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "",
                "PORT": parts.port or 5432,
            }
        },
        INSTALLED_APPS=["django_celery_beat"],
        USE_TZ=True,
        TIME_ZONE="UTC",
    )
    django.setup()
    models = _module("django_celery_beat.models")
    IntervalSchedule, PeriodicTask = models.IntervalSchedule, models.PeriodicTask
    DatabaseScheduler = _module("django_celery_beat.schedulers").DatabaseScheduler

    _module("django.core.management").call_command("migrate", "django_celery_beat", verbosity=0)
    every = IntervalSchedule.objects.create(every=HOUR, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.bulk_create(
        (PeriodicTask(name=f"bench-{i:07d}", task=TASK, interval=every) for i in range(size)),
        batch_size=5000,
    )
    app = _celery_app()

    def change(number: int) -> None:
        task = PeriodicTask.objects.get(name=f"bench-{number:07d}")
        task.description = f"changed {number}"
        task.save()  # its pre_save signal bumps PeriodicTasks.last_update

    return measure(lambda: DatabaseScheduler(app=app), change, ticks=ticks, changes=changes)


def sqlalchemy_peer(database_url: str, size: int, *, ticks: int, changes: int) -> dict[str, Any]:
    import sqlalchemy as sa

    models = _module("sqlalchemy_celery_beat.models")
    IntervalSchedule, Period, PeriodicTask = (
        models.IntervalSchedule,
        models.Period,
        models.PeriodicTask,
    )
    DatabaseScheduler = _module("sqlalchemy_celery_beat.schedulers").DatabaseScheduler
    SessionManager = _module("sqlalchemy_celery_beat.session").SessionManager

    dburi = "postgresql+psycopg2://" + database_url.split("://", 1)[1]
    manager = SessionManager()
    engine, session_factory = manager.create_session(dburi)
    manager.prepare_models(engine)
    with session_factory() as session:
        every = IntervalSchedule(every=HOUR, period=Period.SECONDS)
        session.add(every)
        session.commit()
        rows = [
            {
                "name": f"bench-{i:07d}",
                "task": TASK,
                "discriminator": "intervalschedule",
                "schedule_id": every.id,
            }
            for i in range(size)
        ]
        session.execute(sa.insert(PeriodicTask), rows)
        session.commit()
    app = _celery_app()
    app.conf.beat_dburi = dburi

    def change(number: int) -> None:
        with session_factory() as session:
            query = sa.select(PeriodicTask).where(PeriodicTask.name == f"bench-{number:07d}")
            task = session.scalars(query).one()
            task.description = f"changed {number}"
            session.commit()  # its after_update event bumps PeriodicTaskChanged

    return measure(lambda: DatabaseScheduler(app=app), change, ticks=ticks, changes=changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS.values()))
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args(argv)
    run = django_peer if args.peer == "django" else sqlalchemy_peer
    result = run(args.database_url, args.size, ticks=args.ticks, changes=args.changes)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
