"""The dataforge-scheduler command, run as a user runs it: a real process, real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dataforge_scheduler", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


@pytest.fixture
def cli_env(pg_url: str, redis_url: str, key_prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    env.update(
        {
            "DATAFORGE_DATABASE_URL": pg_url,
            "DATAFORGE_REDIS_URL": redis_url,
            "DATAFORGE_CELERY_BROKER_URL": redis_url,
            "DATAFORGE_KEY_PREFIX": key_prefix,
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def test_help_for_every_subcommand(cli_env: dict[str, str]) -> None:
    for command in ("init-db", "check", "run", "cancel", "rerun", "backfill", "pause", "resume"):
        done = run_cli(command, "--help", env=cli_env)
        assert done.returncode == 0, done.stderr
        assert "usage: dataforge-scheduler " + command in done.stdout


@pytest.mark.postgres
def test_init_db_creates_tables_idempotently(cli_env: dict[str, str], pg: Any) -> None:
    pg_engine = pg
    for _ in range(2):
        done = run_cli("init-db", env=cli_env)
        assert done.returncode == 0, done.stderr
        assert "tables ready" in done.stdout
    assert {"scheduled_tasks", "task_executions"} <= set(sa.inspect(pg_engine).get_table_names())
    with pg_engine.connect() as conn:
        names = conn.execute(
            sa.text("SELECT name FROM scheduled_tasks WHERE is_system ORDER BY name")
        ).scalars()
        assert list(names) == [
            "dataforge.maintenance.cleanup_executions",
            "dataforge.maintenance.reap_lost_executions",
        ]


def _insert(engine: Any, **row: Any) -> None:
    from dataforge_scheduler.sql.models import ScheduledTask

    with engine.begin() as conn:
        conn.execute(sa.insert(ScheduledTask).values(**row))


@pytest.mark.postgres
@pytest.mark.redis
def test_check_passes_on_a_healthy_deployment(cli_env: dict[str, str], pg: Any) -> None:
    _insert(
        pg,
        name="ok",
        task_type="interval",
        task_name="dataforge.sync_accounts",
        interval_seconds=60,
    )
    _insert(
        pg,
        name="ok-params",
        task_type="cron",
        cron_expression="0 2 * * *",
        task_name="dataforge.cleanup_logs",
        handler_kwargs={"days": 7},
    )
    done = run_cli("check", "-A", "tests.integration.apps.cli_app:app", env=cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks passed" in done.stdout
    assert "2 schedule(s) read" in done.stdout


@pytest.mark.postgres
@pytest.mark.redis
def test_check_reports_each_planted_problem_on_its_own_line(
    cli_env: dict[str, str], pg: Any
) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    _insert(
        pg,
        name="typo",
        task_type="interval",
        task_name="dataforge.sync_acounts",
        interval_seconds=60,
    )
    _insert(
        pg,
        name="bad-kwargs",
        task_type="interval",
        interval_seconds=60,
        task_name="dataforge.cleanup_logs",
        handler_kwargs={"days": "many", "extra": 1},
    )
    _insert(
        pg,
        name="missing-kwargs",
        task_type="interval",
        interval_seconds=60,
        task_name="dataforge.cleanup_logs",
        handler_kwargs={},
    )
    _insert(
        pg, name="stale-date", task_type="date", run_at=past, task_name="dataforge.sync_accounts"
    )
    _insert(
        pg,
        name="bad-cron",
        task_type="cron",
        cron_expression="61 * * * *",
        task_name="dataforge.sync_accounts",
    )
    done = run_cli("check", "-A", "tests.integration.apps.cli_app:app", env=cli_env)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert any(
        "'typo'" in line and "dataforge.sync_acounts" in line and "dataforge.sync_accounts" in line
        for line in fails
    ), out
    assert any("'bad-kwargs'" in line and "days" in line for line in fails), out
    assert any("'bad-kwargs'" in line and "extra" in line for line in fails), out
    assert any("'missing-kwargs'" in line and "days" in line for line in fails), out
    assert any("'stale-date'" in line and "never fire" in line for line in fails), out
    assert any("'bad-cron'" in line and "minute" in line for line in fails), out
    assert "problem(s) found" in out


def test_check_reports_invalid_settings_by_env_var(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, DATAFORGE_CELERY_TIMEZONE="Mars/Olympus")
    done = run_cli("check", env=env)
    assert done.returncode == 1
    assert "DATAFORGE_CELERY_TIMEZONE" in done.stdout
    assert "Mars/Olympus" in done.stdout


def test_check_reports_unreachable_database(cli_env: dict[str, str]) -> None:
    env = dict(
        cli_env,
        DATAFORGE_DATABASE_URL="postgresql+psycopg://nobody:secret@127.0.0.1:9/none",
    )
    done = run_cli("check", env=env)
    assert done.returncode == 1
    assert "FAIL  database" in done.stdout
    assert "secret" not in done.stdout


def test_check_reports_an_app_that_cannot_be_imported(cli_env: dict[str, str]) -> None:
    done = run_cli("check", "-A", "no_such_module_here:app", env=cli_env)
    assert done.returncode == 1
    assert "cannot be loaded" in done.stdout


@pytest.mark.postgres
@pytest.mark.redis
def test_cancel_revokes_a_pending_run_and_refuses_an_ended_one(
    cli_env: dict[str, str], pg: Any
) -> None:
    import getpass
    import uuid

    from dataforge_scheduler.sql import store
    from dataforge_scheduler.sql.models import AuditEntry, TaskExecution, create_all

    create_all(pg)
    with sa.orm.Session(pg) as session, session.begin():
        run = store.create_manual_run(
            session,
            schedule=None,
            task_name="app.report",
            celery_task_id=str(uuid.uuid4()),
            kwargs={},
            now=datetime.now(UTC),
        )
    done = run_cli("cancel", str(run.execution_id), "--reason", "wrong day", env=cli_env)

    user = getpass.getuser()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"execution {run.execution_id} ({run.celery_task_id}): revoked: "
        f"cancelled by cli:{user}: wrong day"
    )
    with sa.orm.Session(pg) as session:
        row = session.get(TaskExecution, run.execution_id)
        assert row is not None
        assert (row.status, row.error) == ("revoked", f"cancelled by cli:{user}: wrong day")
        audit = session.scalars(sa.select(AuditEntry)).one()
        assert (audit.action, audit.principal, audit.target_id) == (
            "cancel",
            f"cli:{user}",
            run.execution_id,
        )
    again = run_cli("cancel", str(run.execution_id), env=cli_env)
    assert again.returncode == 1
    assert "has already ended (revoked)" in again.stderr
    missing = run_cli("cancel", "999999", env=cli_env)
    assert missing.returncode == 1
    assert "no execution with id 999999" in missing.stderr


@pytest.mark.postgres
@pytest.mark.redis
def test_rerun_sends_an_ended_run_again_and_refuses_an_open_one(
    cli_env: dict[str, str], pg: Any, redis_client: Any
) -> None:
    import getpass
    import json
    import uuid

    from dataforge_scheduler.core.enums import ExecutionStatus
    from dataforge_scheduler.sql import store
    from dataforge_scheduler.sql.models import AuditEntry, TaskExecution, create_all

    create_all(pg)
    with sa.orm.Session(pg) as session, session.begin():
        run = store.create_manual_run(
            session,
            schedule=None,
            task_name="app.report",
            celery_task_id=str(uuid.uuid4()),
            kwargs={"days": 3, "fmt": "csv"},
            now=datetime.now(UTC),
        )
    pending = run_cli("rerun", str(run.execution_id), env=cli_env)
    assert pending.returncode == 1
    assert "has not ended (pending)" in pending.stderr
    with sa.orm.Session(pg) as session, session.begin():
        store.finish_run(
            session,
            celery_task_id=run.celery_task_id,
            status=ExecutionStatus.FAILED,
            now=datetime.now(UTC),
            error="boom",
        )

    done = run_cli("rerun", str(run.execution_id), "--kwargs", '{"days": 7}', env=cli_env)

    assert done.returncode == 0, done.stderr
    assert "not in the registry" in done.stderr
    with sa.orm.Session(pg) as session:
        new = session.scalars(
            sa.select(TaskExecution).where(TaskExecution.rerun_of == run.execution_id)
        ).one()
        assert done.stdout.strip() == (
            f"execution {new.id} ({new.celery_task_id}): sent, a rerun of execution "
            f"{run.execution_id} (app.report)"
        )
        assert (new.task_name, new.kwargs, new.trigger) == (
            "app.report",
            {"days": 7, "fmt": "csv"},
            "manual",
        )
        assert new.sent_at is not None
        audit = session.scalars(sa.select(AuditEntry)).one()
        assert (audit.action, audit.principal, audit.target_id) == (
            "rerun",
            f"cli:{getpass.getuser()}",
            run.execution_id,
        )
    queued = [json.loads(raw) for raw in redis_client.lrange("celery", 0, -1)]
    ours = [m for m in queued if m["headers"]["id"] == new.celery_task_id]
    assert len(ours) == 1, "the broker holds the new run's message"
    assert ours[0]["headers"]["task"] == "app.report"
    for raw in redis_client.lrange("celery", 0, -1):
        if json.loads(raw)["headers"]["id"] == new.celery_task_id:
            redis_client.lrem("celery", 1, raw)
    bad = run_cli("rerun", str(run.execution_id), "--kwargs", "[1]", env=cli_env)
    assert bad.returncode == 2
    assert "a JSON object is needed" in bad.stderr


@pytest.mark.postgres
@pytest.mark.redis
def test_pause_with_a_note_and_resume_are_audited_and_wake_the_beats(
    cli_env: dict[str, str], pg: Any, redis_client: Any, key_prefix: str
) -> None:
    import getpass

    from dataforge_scheduler.sql import store
    from dataforge_scheduler.sql.models import AuditEntry, ScheduledTask, create_all

    create_all(pg)
    with sa.orm.Session(pg) as session, session.begin():
        schedule_id = store.create_schedule(
            session,
            {
                "name": "nightly",
                "task_type": "cron",
                "task_name": "app.report",
                "cron_expression": "0 3 * * *",
            },
            now=datetime.now(UTC),
            default_timezone="UTC",
        ).id
    pubsub = redis_client.pubsub()
    pubsub.psubscribe(f"{key_prefix}*")
    pubsub.get_message(timeout=1)  # the subscription's own message

    paused = run_cli("pause", str(schedule_id), "--note", "vendor outage", env=cli_env)
    again = run_cli("pause", str(schedule_id), env=cli_env)
    notice = pubsub.get_message(timeout=2)
    resumed = run_cli("resume", str(schedule_id), env=cli_env)
    missing = run_cli("pause", "999999", env=cli_env)
    pubsub.close()

    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"schedule {schedule_id} (nightly): paused: vendor outage"
    assert again.stdout.strip() == (
        f"schedule {schedule_id} (nightly): paused (already): vendor outage"
    )
    assert notice is not None, "the beats were told"
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"schedule {schedule_id} (nightly): active, next run at ")
    assert missing.returncode == 1
    assert "999999" in missing.stderr
    with sa.orm.Session(pg) as session:
        row = session.get(ScheduledTask, schedule_id)
        assert row is not None
        assert (row.status, row.pause_note) == ("active", None)
        audit = session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(a.action, a.principal) for a in audit] == [
            ("pause", f"cli:{getpass.getuser()}"),
            ("resume", f"cli:{getpass.getuser()}"),
        ]
        assert audit[0].after["pause_note"] == "vendor outage"


@pytest.mark.postgres
@pytest.mark.redis
def test_run_with_skip_next_sends_now_and_skips_the_next_slot(
    cli_env: dict[str, str], pg: Any, redis_client: Any
) -> None:
    import json

    from dataforge_scheduler.sql import store
    from dataforge_scheduler.sql.models import TaskExecution, create_all

    create_all(pg)
    with sa.orm.Session(pg) as session, session.begin():
        schedule = store.create_schedule(
            session,
            {
                "name": "nightly",
                "task_type": "cron",
                "task_name": "app.report",
                "cron_expression": "0 3 * * *",
                "handler_kwargs": {"days": 1},
            },
            now=datetime.now(UTC),
            default_timezone="UTC",
        )
        schedule_id, slot = schedule.id, schedule.next_run_at

    done = run_cli("run", str(schedule_id), "--skip-next", "--kwargs", '{"days": 2}', env=cli_env)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(
        f"its next slot, {slot.isoformat()}, is skipped (ran early)"
    )
    with sa.orm.Session(pg) as session:
        rows = session.scalars(
            sa.select(TaskExecution).where(TaskExecution.scheduled_task_id == schedule_id)
        ).all()
    by_slot = {row.scheduled_for: row for row in rows}
    assert by_slot[slot].status == "skipped"
    assert by_slot[slot].error.startswith("ran early: run now (execution ")
    manual = by_slot[None]
    assert manual.kwargs == {"days": 2, "scheduled_task_id": schedule_id}
    for raw in redis_client.lrange("celery", 0, -1):
        if json.loads(raw)["headers"]["id"] == manual.celery_task_id:
            redis_client.lrem("celery", 1, raw)
            break
    else:
        raise AssertionError("the run's message is not on the broker")
    again = run_cli("run", str(schedule_id), "--skip-next", env=cli_env)
    assert again.returncode == 1
    assert "already has a run" in again.stderr


@pytest.mark.postgres
def test_backfill_lists_queues_reports_and_cancels_a_past_range(
    cli_env: dict[str, str], pg: Any
) -> None:
    import getpass

    from dataforge_scheduler.sql import store
    from dataforge_scheduler.sql.models import AuditEntry, TaskExecution, create_all

    create_all(pg)
    with sa.orm.Session(pg) as session, session.begin():
        schedule_id = store.create_schedule(
            session,
            {
                "name": "six-hourly",
                "task_type": "cron",
                "task_name": "app.report",
                "cron_expression": "0 */6 * * *",
            },
            now=datetime.now(UTC),
            default_timezone="UTC",
        ).id
    sid = str(schedule_id)
    span = ("--start", "2026-03-02T00:00:00+00:00", "--end", "2026-03-03T00:00:00+00:00")

    dry = run_cli("backfill", sid, *span, "--dry-run", env=cli_env)
    done = run_cli("backfill", sid, *span, env=cli_env)
    again = run_cli("backfill", sid, *span[:2], "--end", "2026-03-02T07:00:00+00:00", env=cli_env)
    cancelled = run_cli("backfill", sid, "--cancel", "--reason", "wrong day", env=cli_env)
    future = run_cli("backfill", sid, "--start", span[1], "--end", "2999-01-01T00:00Z", env=cli_env)
    naive = run_cli("backfill", sid, "--start", "2026-03-02T00:00", "--end", span[3], env=cli_env)
    bare = run_cli("backfill", sid, env=cli_env)

    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"schedule {sid}: would queue 4 slot(s); 0 already had a run",
        *[f"  2026-03-02T{h:02d}:00:00+00:00  new" for h in (0, 6, 12, 18)],
    ]
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"schedule {sid}: queued 4 slot(s); 0 already had a run"
    assert all(line.endswith("(queued)") for line in done.stdout.splitlines()[1:])
    assert again.stdout.splitlines()[0] == f"schedule {sid}: queued 0 slot(s); 2 already had a run"
    assert cancelled.stdout.strip() == f"schedule {sid}: 4 waiting backfill slot(s) revoked"
    assert future.returncode == 1
    assert "is in the future" in future.stderr
    assert naive.returncode == 2
    assert "needs an offset" in naive.stderr
    assert bare.returncode == 2
    assert "needs --start and --end" in bare.stderr
    user = f"cli:{getpass.getuser()}"
    with sa.orm.Session(pg) as session:
        rows = session.scalars(sa.select(TaskExecution).order_by(TaskExecution.scheduled_for))
        assert [(r.trigger, r.status, r.error) for r in rows] == [
            ("backfill", "revoked", f"backfill cancelled by {user}: wrong day")
        ] * 4
        audit = session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(a.action, a.principal, a.after.get("created")) for a in audit] == [
            ("backfill", user, 4),
            ("backfill", user, 0),
            ("cancel", user, None),
        ]
