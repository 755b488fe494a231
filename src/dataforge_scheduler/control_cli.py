"""The operator's run-control commands: ``run``, ``cancel``, ``rerun``, ``backfill``,
``pause`` and ``resume``, each a call of ``control`` or the store, audited as
``cli:<user>``.

``cli`` adds them to the command (``add_parsers``) and hands them how to build a
runtime and settings from their arguments, so this module needs nothing of ``cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dataforge_scheduler.errors import DataForgeError
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings

__all__ = ["add_parsers"]


def _checks_kwargs(runtime: Runtime, task_name: str) -> bool:
    """Whether the kwargs of a run of ``task_name`` can be checked here: without ``-A``
    the registry is empty, and the worker is then the one to refuse bad kwargs."""
    if task_name in runtime.registry:
        return True
    print(
        f"note: kwargs not checked: {task_name!r} is not in the registry (pass -A)", file=sys.stderr
    )
    return False


def _operator() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _audit(
    runtime: Runtime,
    session: Any,
    action: str,
    target: tuple[str, int],
    *,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """One audit row for an operator's command, as ``cli:<user>``."""
    from dataforge_scheduler.sql.store import record_audit

    record_audit(
        session,
        principal=_operator(),
        action=action,
        target_type=target[0],
        target_id=target[1],
        before=before,
        after=after,
        request_id=None,
        now=runtime.clock.now(),
    )


def _cmd_cancel(args: argparse.Namespace) -> int:
    from dataforge_scheduler.control import cancel_run
    from dataforge_scheduler.core.enums import AuditAction, ExecutionStatus

    runtime = args.make_runtime(args)
    by = _operator()

    def audit(session: Any, before: ExecutionStatus, done: Any) -> None:
        after = {"status": str(done.status), "reason": done.reason}
        target = ("execution", done.execution_id)
        _audit(
            runtime,
            session,
            AuditAction.CANCEL,
            target,
            before={"status": str(before)},
            after=after,
        )

    try:
        done = cancel_run(
            runtime, args.execution_id, reason=args.reason, by=by, force=args.force, on_record=audit
        )
    finally:
        runtime.close()
    state = "revoked" if done.status is ExecutionStatus.REVOKED else "terminating"
    print(f"execution {done.execution_id} ({done.celery_task_id}): {state}: {done.reason}")
    return 0


# ---------------------------------------------------------------- rerun


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object is needed, got {type(value).__name__}")
    return value


def _cmd_rerun(args: argparse.Namespace) -> int:
    from dataforge_scheduler.control import rerun
    from dataforge_scheduler.core.enums import AuditAction
    from dataforge_scheduler.sql import store

    runtime = args.make_runtime(args)

    def audit(session: Any, run: Any, schedule: Any) -> None:
        after = {"execution_id": run.execution_id, "task_id": run.celery_task_id}
        target = ("execution", args.execution_id)
        _audit(runtime, session, AuditAction.RERUN, target, before=None, after=after)

    try:
        with runtime.session() as session:
            task_name = store.get_execution(session, args.execution_id).task_name
        done = rerun(
            runtime,
            args.execution_id,
            kwargs=args.kwargs,
            validate=_checks_kwargs(runtime, task_name),
            on_record=audit,
        )
    finally:
        runtime.close()
    run = done.run
    print(
        f"execution {run.execution_id} ({run.celery_task_id}): sent, a rerun of execution "
        f"{args.execution_id} ({run.task_name})"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dataforge_scheduler.control import run_now
    from dataforge_scheduler.core.enums import AuditAction
    from dataforge_scheduler.sql import store

    runtime = args.make_runtime(args)

    def audit(session: Any, run: Any, schedule: Any) -> None:
        after = {"execution_id": run.execution_id, "task_id": run.celery_task_id}
        if args.skip_next:
            after["skip_next"] = True
        target = ("schedule", args.schedule_id)
        _audit(runtime, session, AuditAction.RUN, target, before=None, after=after)

    try:
        with runtime.session() as session:
            task_name = store.get_schedule(session, args.schedule_id).task_name
        done = run_now(
            runtime,
            schedule_id=args.schedule_id,
            kwargs=args.kwargs,
            validate=_checks_kwargs(runtime, task_name),
            skip_next=args.skip_next,
            on_record=audit,
        )
    finally:
        runtime.close()
    run = done.run
    skipped = (
        f"; its next slot, {done.skipped_slot.isoformat()}, is skipped (ran early)"
        if done.skipped_slot is not None
        else ""
    )
    print(f"execution {run.execution_id} ({run.celery_task_id}): sent{skipped}")
    return 0


# ---------------------------------------------------------------- backfill


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs an offset, e.g. {text}+00:00")
    return value


def _cmd_backfill(args: argparse.Namespace) -> int:
    from dataforge_scheduler.control import backfill, cancel_backfill
    from dataforge_scheduler.core.enums import AuditAction

    runtime = Runtime(args.make_settings(args))
    target = ("schedule", args.schedule_id)
    try:
        if args.cancel:

            def audit_cancel(session: Any, done: Any) -> None:
                after = {"backfill_cancelled": done.cancelled, "reason": args.reason}
                _audit(runtime, session, AuditAction.CANCEL, target, before=None, after=after)

            done = cancel_backfill(
                runtime,
                args.schedule_id,
                reason=args.reason,
                by=_operator(),
                on_record=audit_cancel,
            )
            print(f"schedule {args.schedule_id}: {done.cancelled} waiting backfill slot(s) revoked")
            return 0
        if args.start is None or args.end is None:
            print("error: backfill needs --start and --end (or --cancel)", file=sys.stderr)
            return 2

        def audit(session: Any, done: Any) -> None:
            after = {
                "start": args.start.isoformat(),
                "end": args.end.isoformat(),
                "created": len(done.created),
                "existing": len(done.existing),
            }
            _audit(runtime, session, AuditAction.BACKFILL, target, before=None, after=after)

        done = backfill(
            runtime,
            args.schedule_id,
            start=args.start,
            end=args.end,
            dry_run=args.dry_run,
            on_record=audit,
        )
    finally:
        runtime.close()
    verb = "would queue" if args.dry_run else "queued"
    print(
        f"schedule {args.schedule_id}: {verb} {len(done.created)} slot(s); "
        f"{len(done.existing)} already had a run"
    )
    rows = [(slot, "new" if args.dry_run else "queued") for slot in done.created]
    rows += [(slot, "has a run") for slot in done.existing]
    for slot, state in sorted(rows, key=lambda row: row[0].scheduled_for):
        run = "" if slot.execution_id is None else f" execution {slot.execution_id}"
        status = "" if slot.status is None else f" ({slot.status})"
        print(f"  {slot.scheduled_for.isoformat()}  {state}{run}{status}")
    return 0


# ---------------------------------------------------------------- pause, resume


def _cmd_pause_or_resume(args: argparse.Namespace) -> int:
    from dataforge_scheduler.core.enums import AuditAction
    from dataforge_scheduler.sql import store
    from dataforge_scheduler.sql.store import schedule_snapshot

    settings = args.make_settings(args)
    runtime = Runtime(settings)
    pause = args.command == "pause"
    try:
        now = runtime.clock.now()
        with runtime.session() as session:
            before = schedule_snapshot(store.get_schedule(session, args.schedule_id))
            if pause:
                row = store.pause_schedule(session, args.schedule_id, now=now, note=args.note)
            else:
                row = store.resume_schedule(
                    session, args.schedule_id, now=now, default_timezone=settings.celery_timezone
                )
            after = schedule_snapshot(row)
            if after != before:
                action = AuditAction.PAUSE if pause else AuditAction.RESUME
                target = ("schedule", args.schedule_id)
                _audit(runtime, session, action, target, before=before, after=after)
            name, status, note, upcoming = row.name, row.status, row.pause_note, row.next_run_at
        if after != before:
            try:
                runtime.notices.publish(args.schedule_id)
            except DataForgeError as exc:  # the beats still see it at their next pass
                print(f"note: the beats were not told at once ({exc})", file=sys.stderr)
    finally:
        runtime.close()
    changed = "" if after != before else " (already)"
    detail = f": {note}" if pause and note else ""
    if not pause:
        detail = f", next run at {upcoming.isoformat()}" if upcoming else ", no run to come"
    print(f"schedule {args.schedule_id} ({name}): {status}{changed}{detail}")
    return 0


def add_parsers(
    sub: Any,
    *,
    runtime: Callable[[argparse.Namespace], Runtime],
    settings: Callable[[argparse.Namespace], Settings],
) -> None:
    """Add ``run``, ``cancel``, ``rerun``, ``backfill``, ``pause`` and ``resume`` to the command's
    subparsers; ``runtime`` and ``settings`` build what a command works with from its
    arguments (the host's app with ``-A``)."""
    cancel = sub.add_parser(
        "cancel",
        help="cancel a run (revoke it; terminate it if it is going)",
        description=(
            "Cancel one run by its execution id: one not started ends revoked at once, one "
            "going is terminated (SIGTERM, or SIGKILL with --force) and ends revoked when "
            "its worker stops it. A run that has ended is refused (exit 1)."
        ),
    )
    cancel.add_argument("execution_id", type=int, help="the run's execution id")
    cancel.add_argument("--reason", help="why, recorded on the run's row")
    cancel.add_argument(
        "--force", action="store_true", help="SIGKILL instead of SIGTERM for a run going"
    )
    cancel.add_argument("-A", "--app", help="the host's Celery app as module:attribute")
    cancel.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    cancel.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
    cancel.set_defaults(handler=_cmd_cancel)
    again = sub.add_parser(
        "rerun",
        help="run an ended run again",
        description=(
            "Run one ended run again by its execution id: a new manual run of the same task "
            "with the same kwargs (--kwargs merged over them, checked against the task's "
            "params), linked to the original. A run still open is refused (exit 1)."
        ),
    )
    again.add_argument("execution_id", type=int, help="the run's execution id")
    again.add_argument(
        "--kwargs",
        type=_json_object,
        default=None,
        help="a JSON object merged over the original kwargs, e.g. '{\"days\": 7}'",
    )
    again.add_argument("-A", "--app", help="the host's Celery app as module:attribute")
    again.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    again.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
    again.set_defaults(handler=_cmd_rerun)
    run = sub.add_parser(
        "run",
        help="run a schedule now",
        description=(
            "Run one schedule now with its handler_kwargs (--kwargs merged over them); "
            "--skip-next makes the run take the place of its next slot, which is recorded "
            "skipped and never sent."
        ),
    )
    run.add_argument("schedule_id", type=int, help="the schedule's id")
    run.add_argument("--kwargs", type=_json_object, default=None, help="a JSON object")
    run.add_argument("--skip-next", action="store_true", help="skip the next scheduled slot")
    run.add_argument("-A", "--app", help="the host's Celery app as module:attribute")
    run.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    run.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
    run.set_defaults(handler=_cmd_run)
    fill = sub.add_parser(
        "backfill",
        help="run a schedule's slots of a past range, one after another",
        description=(
            "Queue the runs a schedule would have had from --start (included) to --end "
            "(excluded, not in the future): its trigger's slots there, with its zone, "
            "window and exclusions. A running beat sends them one at a time, oldest first. "
            "Slots that already have a run are left alone. --dry-run lists them only; "
            "--cancel revokes the slots still waiting."
        ),
    )
    fill.add_argument("schedule_id", type=int, help="the schedule's id")
    fill.add_argument("--start", type=_instant, help="ISO 8601 with an offset")
    fill.add_argument("--end", type=_instant, help="ISO 8601 with an offset")
    fill.add_argument("--dry-run", action="store_true", help="list the slots, create nothing")
    fill.add_argument("--cancel", action="store_true", help="revoke the waiting slots")
    fill.add_argument("--reason", help="with --cancel: why, recorded on each slot's row")
    fill.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    fill.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
    fill.set_defaults(handler=_cmd_backfill)
    for command, text in (
        ("pause", "stop a schedule firing, with an optional note saying why"),
        ("resume", "make a paused schedule fire again (its next slot after now)"),
    ):
        control = sub.add_parser(command, help=text, description=text[0].upper() + text[1:] + ".")
        control.add_argument("schedule_id", type=int, help="the schedule's id")
        if command == "pause":
            control.add_argument("--note", help="why, shown with the status until resumed")
        control.add_argument(
            "--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)"
        )
        control.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
        control.set_defaults(handler=_cmd_pause_or_resume)
    for command in ("cancel", "rerun", "run", "backfill", "pause", "resume"):
        sub.choices[command].set_defaults(make_runtime=runtime, make_settings=settings)
