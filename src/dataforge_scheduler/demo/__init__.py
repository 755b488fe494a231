"""The ``demo`` command: the whole library in one process, with nothing to install.

``dataforge-scheduler demo`` runs a SQLite database, an in-process broker and lock/log
store, a Celery worker, the beat scheduler and the REST API (on 127.0.0.1:8847) in one
process, with two example tasks on a 5-second interval and a ``* * * * *`` cron, and
narrates every dispatch, run, log line and result on the console. ``--database-url``
and ``--redis-url`` switch it to real services. Ctrl-C or SIGTERM stop it cleanly (exit
0); ``--duration`` stops it after that many seconds and exits 1 when no run succeeded,
which is what CI checks. The parts live in ``demo.app`` (wiring), ``demo.tasks`` (the
example tasks) and ``demo.console`` (what is shown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dataforge_scheduler.serve import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    StopSignals,
    configure_logging,
    is_loopback,
    require_uvicorn,
)

if TYPE_CHECKING:
    from dataforge_scheduler.demo.app import Demo, DemoOptions
    from dataforge_scheduler.demo.console import Console

__all__ = ["add_parser", "cmd_demo", "run_demo"]

EXIT_OK = 0
EXIT_NO_SUCCESS = 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to the ``dataforge-scheduler`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run everything in one process with two example tasks (no services needed)",
        description=(
            "Run the database, broker, worker, beat scheduler and REST API in one process "
            "with two example tasks, and show every dispatch, run, log line and result. "
            "By default: a SQLite file in a fresh temporary directory and in-process "
            "broker, locks and logs, the API on 127.0.0.1:8847 with the key 'demo-key' "
            "(loopback only). Ctrl-C stops it."
        ),
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"API bind address ({DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"API port ({DEFAULT_PORT})")
    parser.add_argument(
        "--database-url", help="a SQLAlchemy URL instead of the SQLite file (e.g. PostgreSQL)"
    )
    parser.add_argument(
        "--redis-url",
        help="a Redis URL for broker, results, locks and logs instead of the in-process ones",
    )
    parser.add_argument(
        "--api-key", help="the API key (default: DATAFORGE_API_KEYS, else 'demo-key')"
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after SECONDS; exit 1 if no run succeeded by then (for CI)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="directory of the SQLite file (default: a fresh temp dir)"
    )
    parser.set_defaults(handler=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from dataforge_scheduler.demo.app import DemoOptions

    configure_logging()

    options = DemoOptions(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        redis_url=args.redis_url,
        api_key=args.api_key,
        data_dir=args.data_dir,
    )
    return run_demo(options, duration=args.duration)


def run_demo(
    options: DemoOptions, *, duration: float | None = None, stream: TextIO | None = None
) -> int:
    """Run the demo until a signal or ``duration`` s; the command's exit code."""
    from dataforge_scheduler.demo.app import Demo, make_data_dir
    from dataforge_scheduler.demo.console import Console
    from dataforge_scheduler.errors import ConfigurationError

    require_uvicorn()
    if duration is not None and duration <= 0:
        raise ConfigurationError(f"--duration must be > 0, got {duration}", field="duration")
    if not is_loopback(options.host) and options.api_key is None:
        raise ConfigurationError(
            f"--host {options.host} is reachable from other machines: pass --api-key with a "
            "key of your own (the default demo key is public)",
            field="api_key",
        )
    console = Console(stream if stream is not None else sys.stdout)
    demo = Demo(options, data_dir=make_data_dir(options), console=console)
    with StopSignals() as stop:
        try:
            created = demo.prepare()
            demo.start()
            _banner(demo, created)
            demo.start_scheduler()
            reason = stop.wait(duration)
            console.write(f"\nstopping ({reason})...")
        finally:
            demo.stop()
    return _summary(demo, console, duration=duration)


def _banner(demo: Demo, created: list[str]) -> None:
    from urllib.parse import quote

    from dataforge_scheduler.settings import mask_url

    console = demo.console
    settings = demo.settings
    write = console.write
    write("dataforge-scheduler demo: database, broker, worker, beat and API in one process")
    if demo.data_dir is not None:
        write(f"  data dir   {demo.data_dir}")
    write(f"  database   {mask_url(settings.database_url)}")
    write(f"  broker     {mask_url(settings.celery_broker_url)}")
    reach = "this machine only" if is_loopback(demo.options.host) else "other machines too"
    write(f"  API        {demo.api_url}   (reachable from {reach})")
    write(f"  API key    {demo.api_key}")
    if created:
        write(f"  created    {', '.join(created)}")
    write("")
    key = quote(demo.api_key, safe="")
    write(f"  try:  curl '{demo.api_url}/tasks?api_key={key}'")
    write(f"        open {demo.api_url}/openapi.json")
    write("  Ctrl-C stops the demo.")
    write("")


def _summary(demo: Demo, console: Console, *, duration: float | None) -> int:
    outcomes = demo.narrator.outcomes
    seen = ", ".join(f"{count} {status}" for status, count in sorted(outcomes.items()))
    console.write(f"demo stopped: {seen or 'no run finished'}")
    if demo.data_dir is not None:
        console.write(f"the SQLite database stays in {demo.data_dir}")
    if duration is not None and not demo.successful_runs:
        console.write(f"FAIL: no run succeeded within {duration:g} s")
        return EXIT_NO_SUCCESS
    return EXIT_OK
