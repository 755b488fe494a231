"""The ``dataforge-scheduler`` command: ``init-db``, ``check``, ``migrate``,
``history-writer``, ``run``, ``cancel``, ``rerun``, ``pause``, ``resume``, ``demo``,
``api``.

Each subcommand reads settings from the environment (``DATAFORGE_*``) unless told
otherwise, prints one line per fact, and exits non-zero when something is wrong. This is
the only module (with the demo) that prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dataforge_scheduler import control_cli, demo, serve
from dataforge_scheduler.core.enums import TaskStatus
from dataforge_scheduler.errors import DataForgeError, InvalidParams
from dataforge_scheduler.migrations import cli as migrations_cli
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.settings import Settings, mask_url

__all__ = ["main"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


@dataclass
class Report:
    """Lines of a check: what is fine and what is not."""

    problems: list[str] = field(default_factory=list)
    oks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ok(self, line: str) -> None:
        self.oks.append(line)
        print(f"ok    {line}")

    def warn(self, line: str) -> None:
        self.warnings.append(line)
        print(f"warn  {line}")

    def problem(self, line: str) -> None:
        self.problems.append(line)
        print(f"FAIL  {line}")


# ---------------------------------------------------------------- helpers


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    return Settings.from_env(**overrides)


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (or ``module``, taking ``app``/``celery_app``/``celery``)."""
    from celery.utils.imports import import_from_cwd

    module_name, _, attribute = spec.partition(":")
    # like `celery -A`: the current directory is importable, as it is for the host's shell
    module = import_from_cwd(module_name)
    candidates = [attribute] if attribute else ["celery_app", "app", "celery"]
    for name in candidates:
        app = getattr(module, name, None)
        if app is not None and hasattr(app, "tasks") and hasattr(app, "conf"):
            return app
    tried = ", ".join(f"{module_name}:{name}" for name in candidates)
    raise DataForgeError(f"no Celery app found in {spec!r}: tried {tried}")


def _runtime_for_app(app: Any, settings: Settings) -> Runtime:
    try:
        return runtime_for(app)
    except DataForgeError:
        return Runtime(settings)


def _app_task_names(app: Any) -> set[str]:
    # import the modules named in `include`/`imports`, as a worker would, before looking
    app.loader.import_default_modules()
    return {name for name in app.tasks if not name.startswith("celery.")}


# ---------------------------------------------------------------- init-db


def cmd_init_db(args: argparse.Namespace) -> int:
    from dataforge_scheduler.celery.maintenance import ensure_maintenance_schedules
    from dataforge_scheduler.sql.engine import create_engine
    from dataforge_scheduler.sql.models import create_all
    from dataforge_scheduler.sql.store import ping

    settings = _settings(args)
    engine = create_engine(settings.database_url)
    runtime = Runtime(settings, engine=engine)
    try:
        ping(engine)
        create_all(engine)
        created = ensure_maintenance_schedules(runtime)
    finally:
        runtime.close()
    print(f"tables ready in {mask_url(settings.database_url)}")
    for name in created:
        print(f"created system schedule {name}")
    return EXIT_OK


# ---------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    report = Report()
    try:
        settings = _settings(args)
    except DataForgeError as exc:
        for line in str(exc).splitlines():
            report.problem(f"settings: {line.strip()}")
        return EXIT_PROBLEMS
    report.ok("settings are valid")

    app = None
    if args.app:
        try:
            app = load_app(args.app)
        except Exception as exc:  # an import error in the host's code is a finding, not a crash
            report.problem(f"app {args.app!r} cannot be loaded: {exc}")
    runtime = _runtime_for_app(app, settings) if app is not None else Runtime(settings)

    backends_ok = _check_backends(runtime, report)
    if backends_ok:
        app_tasks = _app_task_names(app) if app is not None else None
        _check_schedules(runtime, report, app_tasks=app_tasks)
    runtime.close()
    print(
        f"\n{len(report.problems)} problem(s) found" if report.problems else "\nall checks passed"
    )
    return EXIT_PROBLEMS if report.problems else EXIT_OK


def _check_backends(runtime: Runtime, report: Report) -> bool:
    health = runtime.check()
    database = mask_url(runtime.settings.database_url)
    if health["database"] == "ok":
        report.ok(f"database reachable ({database})")
    else:
        report.problem(f"database {database}: {health['database']}")
    if health["redis"].startswith("ok"):
        report.ok(f"redis reachable ({mask_url(runtime.settings.effective_redis_url)})")
    else:
        report.problem(f"redis {mask_url(runtime.settings.effective_redis_url)}: {health['redis']}")
    if health["redis"].startswith("ok"):
        _check_outbox(runtime, report)
    if health["database"] != "ok":
        return False
    from dataforge_scheduler.sql.store import missing_tables

    missing = missing_tables(runtime.engine)
    if missing:
        report.problem(f"tables missing: {', '.join(missing)} (run `dataforge-scheduler init-db`)")
        return False
    return True


#: An outbox whose oldest record is older than this has no writer keeping up with it.
OUTBOX_WARN_SECONDS = 60.0


def _check_outbox(runtime: Runtime, report: Report) -> None:
    """The history outbox: records waiting for a writer, and the oldest one's age."""
    stats = runtime.backend.journal.stats()
    age = stats.oldest_age_seconds
    line = f"history outbox: {stats.length} record(s) waiting ({stats.in_flight} being applied)"
    if age is None:
        report.ok(line)
    elif age < OUTBOX_WARN_SECONDS:
        report.ok(f"{line}, the oldest {age:.1f} s old")
    else:
        report.warn(
            f"{line}, the oldest {age:.0f} s old: is a history writer running (a Celery "
            "worker of the app, or `dataforge-scheduler history-writer`) and is the "
            "database reachable? Run history reaches task_executions when one drains it"
        )


def cmd_history_writer(args: argparse.Namespace) -> int:
    import signal

    from dataforge_scheduler.history import HistoryWriter

    settings = _settings(args)
    runtime = Runtime(settings)
    writer = HistoryWriter(runtime)

    def stop(signum: int, _frame: Any) -> None:
        print(f"history writer {writer.name}: stopping (signal {signum})", flush=True)
        writer.stop(timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    source, target = mask_url(settings.effective_redis_url), mask_url(settings.database_url)
    print(
        f"history writer {writer.name}: draining the outbox of {source} into {target}",
        flush=True,
    )
    try:
        writer.run_forever()
    finally:
        runtime.close()
    print(f"history writer {writer.name}: {writer.stats.records} record(s) applied", flush=True)
    return EXIT_OK


def _iter_schedules(runtime: Runtime) -> Iterator[Any]:
    from dataforge_scheduler.sql import store

    cursor: str | None = None
    while True:
        with runtime.session() as session:
            batch = store.list_schedules(session, cursor=cursor, page_size=store.MAX_PAGE_SIZE)
        yield from batch.items
        if batch.next_cursor is None:
            return
        cursor = batch.next_cursor


def _check_schedules(runtime: Runtime, report: Report, *, app_tasks: set[str] | None) -> None:
    count = 0
    for row in _iter_schedules(runtime):
        count += 1
        label = f"schedule {row.name!r} (id {row.id})"
        for problem in schedule_problems(row, runtime=runtime, app_tasks=app_tasks):
            report.problem(f"{label}: {problem}")
    report.ok(f"{count} schedule(s) read")


def schedule_problems(row: Any, *, runtime: Runtime, app_tasks: set[str] | None) -> list[str]:
    """Everything that keeps one schedule from running as its author expects."""
    problems: list[str] = []
    registry: TaskRegistry = runtime.registry
    known = row.task_name in registry or (app_tasks is not None and row.task_name in app_tasks)
    if app_tasks is not None and row.task_name not in app_tasks:
        hint = _suggestion(row.task_name, app_tasks | set(registry.names()))
        problems.append(f"task_name {row.task_name!r} is not registered in the Celery app{hint}")
    elif app_tasks is None and row.task_name not in registry:
        hint = _suggestion(row.task_name, set(registry.names()))
        problems.append(f"task_name {row.task_name!r} is not in the task registry{hint}")
    if known and row.task_name in registry:
        try:
            registry.validate_kwargs(row.task_name, row.handler_kwargs)
        except InvalidParams as exc:
            problems.append(f"handler_kwargs: {exc}")
    if row.status is TaskStatus.ACTIVE:
        problems.extend(_firing_problems(row, runtime=runtime))
    return problems


def _suggestion(name: str, names: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _firing_problems(row: Any, *, runtime: Runtime) -> list[str]:
    from dataforge_scheduler.core.enums import TaskType
    from dataforge_scheduler.sql import store

    if row.task_type is TaskType.MANUAL:
        return []
    try:
        upcoming = store.compute_next_run(
            row, now=runtime.clock.now(), default_timezone=runtime.settings.celery_timezone
        )
    except DataForgeError as exc:
        return [f"invalid schedule: {exc}"]
    if upcoming is None:
        return ["active but can never fire again (run_at or end_at is in the past)"]
    return []


# ---------------------------------------------------------------- entry point


# ---------------------------------------------------------------- run control (control_cli)


def _control_runtime(args: argparse.Namespace) -> Runtime:
    """The host app's runtime (``-A``), or one set up from the settings: a command that
    sends needs a broker."""
    from celery import Celery

    from dataforge_scheduler.wiring import setup

    settings = _settings(args)
    app = load_app(args.app) if args.app else Celery("dataforge-cli", set_as_current=False)
    try:
        return runtime_for(app)
    except DataForgeError:  # the app module does not call setup()
        return setup(app, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataforge-scheduler",
        description="Database-driven scheduling for Celery: set up and check a deployment.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init_db = sub.add_parser(
        "init-db",
        help="create the tables (idempotent)",
        description="Create scheduled_tasks and task_executions if they do not exist.",
    )
    init_db.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    init_db.set_defaults(handler=cmd_init_db)

    check = sub.add_parser(
        "check",
        help="verify settings, services and every schedule",
        description=(
            "Verify a deployment: settings valid, database and Redis reachable, every "
            "schedule's task_name registered, its handler_kwargs valid for the task's params, "
            "and no active schedule that can never fire. One line per problem; exit 1 if any."
        ),
    )
    check.add_argument(
        "-A", "--app", help="the host's Celery app as module:attribute (checks task names)"
    )
    check.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    check.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
    check.set_defaults(handler=cmd_check)
    writer = sub.add_parser(
        "history-writer",
        help="drain the run-history outbox into the database (runs until stopped)",
        description=(
            "Apply the run history workers record in the Redis outbox to task_executions, "
            "in batches, until SIGTERM or Ctrl-C. Every Celery worker of the app runs one "
            "already unless history_writer_in_worker is off; run this beside or instead."
        ),
    )
    writer.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    writer.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
    writer.set_defaults(handler=cmd_history_writer)
    control_cli.add_parsers(sub, runtime=_control_runtime, settings=_settings)
    migrations_cli.add_parser(sub)
    demo.add_parser(sub)
    serve.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except DataForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
