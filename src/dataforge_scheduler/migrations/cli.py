"""The ``dataforge-scheduler migrate`` subcommand: upgrade, print SQL, or stamp.

``add_parser`` adds the subcommand to the command's parser; the handler reads the
database URL from ``--database-url`` or the environment (``DATAFORGE_DATABASE_URL``),
runs the library's migrations (:mod:`dataforge_scheduler.migrations`) and prints one line
per fact. Like ``init-db``, a run that leaves the schema at head also creates the
maintenance schedules that do not exist yet. Importing this module does not import
Alembic, so the command's ``--help`` works without the ``migrations`` extra.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dataforge_scheduler.settings import Settings, mask_url

__all__ = ["add_parser", "cmd_migrate"]

EXIT_OK = 0

_DESCRIPTION = """\
Upgrade the library's tables (scheduled_tasks, task_executions, audit_log) with the
Alembic migrations shipped in the package, recording them in the table
dataforge_alembic_version (never the host's alembic_version). Safe to run again, and
from several deploy steps at once (they take turns on PostgreSQL). Needs the extra:
pip install "dataforge-scheduler[migrations]". A host with its own Alembic environment
adds the library's revisions to it instead (docs/operations.md).
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``migrate`` to the ``dataforge-scheduler`` subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate",
        help="upgrade the tables with the shipped Alembic migrations",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    parser.add_argument(
        "--revision",
        default="head",
        help="target revision (default: head); with --sql also a range such as A:B",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL instead of running it (offline; nothing connects)",
    )
    mode.add_argument(
        "--stamp",
        action="store_true",
        help=(
            "record --revision as applied without running it, for tables made by init-db "
            "(refused at head when they differ from this version's schema)"
        ),
    )
    parser.set_defaults(handler=cmd_migrate)
    return parser


def _say(line: str) -> None:
    print(line)  # noqa: T201 - the command's output is its interface


def _database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        return str(args.database_url)
    return Settings.from_env().database_url


def cmd_migrate(args: argparse.Namespace) -> int:
    """Run ``migrate``: errors are ``DataForgeError``s, which the command prints."""
    from dataforge_scheduler import migrations

    url = _database_url(args)
    if args.sql:
        migrations.upgrade(url, args.revision, sql=True, output=sys.stdout)
        return EXIT_OK
    if args.stamp:
        now = migrations.stamp(url, args.revision)
        _say(f"recorded {_label(now)} in {mask_url(url)} (nothing ran)")
        return EXIT_OK
    before, after = migrations.upgrade_from(url, args.revision)
    if before == after:
        _say(f"{mask_url(url)} is already at {_label(after)}")
    else:
        _say(f"upgraded {mask_url(url)} from {_label(before)} to {_label(after)}")
    if after == (migrations.head_revision(),):
        _ensure_maintenance_schedules(url)
    return EXIT_OK


def _label(revisions: tuple[str, ...]) -> str:
    if not revisions:
        return "an empty schema"
    from dataforge_scheduler import migrations

    head = migrations.head_revision()
    return ", ".join(f"{rev} (head)" if rev == head else rev for rev in revisions)


def _ensure_maintenance_schedules(url: str) -> None:
    from dataforge_scheduler.celery.maintenance import ensure_maintenance_schedules
    from dataforge_scheduler.runtime import Runtime

    runtime = Runtime(Settings.from_env(database_url=url))
    try:
        created = ensure_maintenance_schedules(runtime)
    finally:
        runtime.close()
    if created:
        _say(f"created maintenance schedules: {', '.join(created)}")
