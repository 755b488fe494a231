"""The shipped Alembic migrations build exactly ``metadata``, standalone and in a host's env.

Each PostgreSQL test gets databases created for it (really empty, unlike the run's
shared ``pg_url`` database, which ``create_all`` has filled) and dropped after it. The
schema a migration builds is compared with ``metadata`` by Alembic's autogenerate (types
and server defaults included) and, because autogenerate ignores CHECK constraints, by
reflection against a database that ``create_all`` built.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import IN_CI, service_unavailable

from dataforge_scheduler.errors import ConflictError
from dataforge_scheduler.sql.models import create_all, metadata

try:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
except ImportError:  # pragma: no cover - the test extra installs it
    if IN_CI:
        raise
    pytest.skip("alembic is not installed (the migrations extra)", allow_module_level=True)

from dataforge_scheduler import cli, migrations

REPO = Path(__file__).resolve().parents[2]
BASE = "c041e8969ef2"
INDEXES = "68a81dc8dc1a"
RANGES = "4f2a9c1d7b3e"
POLICIES = "9b1e5d3c7a20"
CANCEL = "b3c5d7e9f1a2"
RERUNS = "d4e6f8a0b2c4"
PAUSE_RULES = "e5f7a9b1c3d5"
MAX_RUNS = "f6a8b0c2d4e6"
EXCLUSIONS = "a7b9c1d3e5f7"
HEAD = "b8c0d2e4f6a8"
LIBRARY_TABLES = {"scheduled_tasks", "task_executions", "audit_log"}
SEED_INSERT = """\
INSERT INTO scheduled_tasks (name, description, task_type, task_name, interval_seconds, handler_kwargs, status)
VALUES ('sync_accounts_hourly', '每小时同步账号', 'interval', 'dataforge.sync_accounts', 3600, '{}', 'active');
"""  # noqa: E501 - the seed's statement, byte for byte


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def make_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Create empty PostgreSQL databases on demand; all are dropped after the test."""
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def make() -> str:
        name = f"dataforge_mig_{uuid.uuid4().hex[:12]}"
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            service_unavailable("PostgreSQL", pg_admin_url, exc)
        names.append(name)
        url = sa.make_url(pg_admin_url).set(database=name)
        return url.render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def empty_pg_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture
def reference_schema(make_database: Callable[[], str]) -> dict[str, Any]:
    """The reflected schema of a database that ``create_all`` built."""
    engine = sa.create_engine(make_database())
    try:
        create_all(engine)
        return snapshot(engine)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- helpers


def schema_diff(engine: sa.Engine) -> list[Any]:
    """Autogenerate's diff between the database and ``metadata``, types and defaults on.

    The one filter: only the library's tables are compared, since the version table
    (``dataforge_alembic_version`` or a host's ``alembic_version``) and a host's own
    tables live in the same database and are not in ``metadata``.
    """
    opts = {
        "compare_type": True,
        "compare_server_default": True,
        "include_name": lambda name, type_, _parents: type_ != "table" or name in LIBRARY_TABLES,
    }
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts=opts), metadata))


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Everything reflection sees of the library's tables, in comparable form."""
    inspector = sa.inspect(engine)
    tables: dict[str, Any] = {}
    for table in sorted(LIBRARY_TABLES & set(inspector.get_table_names())):
        columns = [
            (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("identity"))
            for c in inspector.get_columns(table)
        ]
        tables[table] = {
            "columns": columns,
            "pk": inspector.get_pk_constraint(table),
            "fks": sorted(inspector.get_foreign_keys(table), key=lambda f: f["name"] or ""),
            "uniques": sorted(inspector.get_unique_constraints(table), key=lambda u: u["name"]),
            "indexes": sorted(inspector.get_indexes(table), key=lambda i: i["name"] or ""),
            "checks": sorted(inspector.get_check_constraints(table), key=lambda c: c["name"]),
        }
    return tables


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    env.update({"DATAFORGE_DATABASE_URL": database_url, "PYTHONPATH": str(REPO)})
    return subprocess.run(
        [sys.executable, "-m", "dataforge_scheduler", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def assert_matches_metadata(url: str, reference: dict[str, Any]) -> None:
    engine = sa.create_engine(url)
    try:
        assert schema_diff(engine) == []
        assert snapshot(engine) == reference
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the command


def test_migrate_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["migrate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: dataforge-scheduler migrate" in out
    for option in ("--database-url", "--revision", "--sql", "--stamp"):
        assert option in out


def test_migrate_without_alembic_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "alembic", None)  # `import alembic` now fails
    assert cli.main(["migrate", "--database-url", "sqlite://"]) == 1
    err = capsys.readouterr().err
    assert "need Alembic, which is not installed" in err
    assert 'pip install "dataforge-scheduler[migrations]"' in err


def test_sql_prints_the_ddl_without_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    # port 1: nothing listens there, so any connection attempt would fail the command
    url = "postgresql+psycopg://nobody:p%25ss@127.0.0.1:1/nothing"
    assert cli.main(["migrate", "--sql", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE dataforge_alembic_version" in out
    for table in sorted(LIBRARY_TABLES):
        assert f"CREATE TABLE {table} (" in out
    assert "id BIGINT GENERATED BY DEFAULT AS IDENTITY" in out
    assert "handler_kwargs JSONB DEFAULT '{}' NOT NULL" in out
    assert f"INSERT INTO dataforge_alembic_version (version_num) VALUES ('{BASE}')" in out
    chain = (
        BASE,
        INDEXES,
        RANGES,
        POLICIES,
        CANCEL,
        RERUNS,
        PAUSE_RULES,
        MAX_RUNS,
        EXCLUSIONS,
        HEAD,
    )
    for before, after in itertools.pairwise(chain):
        step = f"SET version_num='{after}' WHERE dataforge_alembic_version.version_num"
        assert f"{step} = '{before}'" in out
    assert "ADD CONSTRAINT ck_scheduled_tasks_misfire_grace_non_negative CHECK" in out
    assert "CREATE TRIGGER scheduled_tasks_changed" in out
    assert (
        "CREATE INDEX ix_task_executions_unsent ON task_executions (created_at) "
        "WHERE status = 'pending' AND sent_at IS NULL;"
    ) in out
    assert "CREATE INDEX ix_scheduled_tasks_uninitialised ON scheduled_tasks (id) WHERE" in out
    assert "alembic_version (" not in out.replace("dataforge_alembic_version (", "")


@pytest.mark.postgres
def test_cli_upgrades_an_empty_database_to_exactly_metadata(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    done = run_cli("migrate", database_url=empty_pg_url)
    assert done.returncode == 0, done.stderr
    assert f"from an empty schema to {HEAD} (head)" in done.stdout
    assert "created maintenance schedules" in done.stdout

    assert_matches_metadata(empty_pg_url, reference_schema)
    names = table_names(empty_pg_url)
    assert "dataforge_alembic_version" in names
    assert "alembic_version" not in names  # never the host's table

    again = run_cli("migrate", database_url=empty_pg_url)
    assert again.returncode == 0, again.stderr
    assert f"is already at {HEAD} (head)" in again.stdout
    assert "created maintenance schedules" not in again.stdout


# ---------------------------------------------------------------- the functions


@pytest.mark.postgres
def test_upgrade_then_downgrade_through_the_api(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.current_revisions(empty_pg_url) == ()
    assert migrations.upgrade(empty_pg_url) == (HEAD,)
    assert migrations.head_revision() == HEAD
    assert migrations.current_revisions(empty_pg_url) == (HEAD,)
    assert_matches_metadata(empty_pg_url, reference_schema)
    assert migrations.schema_diff(empty_pg_url) == []

    assert migrations.downgrade(empty_pg_url) == ()
    assert table_names(empty_pg_url) & LIBRARY_TABLES == set()


@pytest.mark.postgres
def test_the_partial_indexes_revision_upgrades_and_downgrades_alone(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.upgrade(empty_pg_url, BASE) == (BASE,)
    engine = sa.create_engine(empty_pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_INSERT))  # the index is built over existing rows
        assert migrations.upgrade(empty_pg_url) == (HEAD,)
        assert_matches_metadata(empty_pg_url, reference_schema)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT indexrelid::regclass::text, pg_get_expr(indpred, indrelid) "
                    "FROM pg_index WHERE indpred IS NOT NULL ORDER BY 1"
                )
            ).all()
        predicates = dict(rows)
        assert list(predicates) == [
            "ix_scheduled_tasks_uninitialised",
            "ix_task_executions_backfill",
            "ix_task_executions_rerun_of",
            "ix_task_executions_unsent",
            "ix_task_executions_waiting",
        ]
        assert "'pending'::text" in predicates["ix_task_executions_unsent"]
        assert "= 'backfill'::text" in predicates["ix_task_executions_backfill"]
        assert "<> 'backfill'::text" in predicates["ix_task_executions_waiting"]

        assert migrations.downgrade(empty_pg_url, BASE) == (BASE,)
        indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("task_executions")}
        assert "ix_task_executions_unsent" not in indexes
        assert "ix_task_executions_created_at" in indexes
    finally:
        engine.dispose()


def _pg_objects(engine: Any) -> dict[str, set[str]]:
    with engine.connect() as conn:
        checks = set(
            conn.scalars(
                sa.text(
                    "SELECT conname FROM pg_constraint "
                    "WHERE conrelid = 'scheduled_tasks'::regclass AND contype = 'c'"
                )
            )
        )
        triggers = set(
            conn.scalars(
                sa.text(
                    "SELECT tgname FROM pg_trigger "
                    "WHERE tgrelid = 'scheduled_tasks'::regclass AND NOT tgisinternal"
                )
            )
        )
        functions = set(
            conn.scalars(
                sa.text("SELECT proname FROM pg_proc WHERE proname = 'dataforge_schedules_changed'")
            )
        )
    return {"checks": checks, "triggers": triggers, "functions": functions}


@pytest.mark.postgres
def test_the_ranges_revision_refuses_bad_rows_then_adds_checks_and_the_trigger(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.upgrade(empty_pg_url, INDEXES) == (INDEXES,)
    engine = sa.create_engine(empty_pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_INSERT))
            conn.execute(sa.text("UPDATE scheduled_tasks SET misfire_grace_seconds = -5"))
        with pytest.raises(RuntimeError, match=r"misfire_grace_non_negative: rows \[1\]") as info:
            migrations.upgrade(empty_pg_url)
        assert "SET misfire_grace_seconds = NULL" in str(info.value)
        assert migrations.current_revisions(empty_pg_url) == (INDEXES,)  # nothing half-done

        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE scheduled_tasks SET misfire_grace_seconds = NULL"))
        assert migrations.upgrade(empty_pg_url) == (HEAD,)
        assert_matches_metadata(empty_pg_url, reference_schema)
        objects = _pg_objects(engine)
        assert {
            "ck_scheduled_tasks_misfire_grace_non_negative",
            "ck_scheduled_tasks_expire_positive",
            "ck_scheduled_tasks_priority_range",
        } <= objects["checks"]
        assert objects["triggers"] == {"scheduled_tasks_changed"}
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="priority_range"):
            conn.execute(sa.text("UPDATE scheduled_tasks SET priority = 300"))

        assert migrations.downgrade(empty_pg_url, INDEXES) == (INDEXES,)
        objects = _pg_objects(engine)
        assert objects["triggers"] == set()
        assert objects["functions"] == set()
        assert "ck_scheduled_tasks_priority_range" not in objects["checks"]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_overlap_revision_admits_buffer_one_and_cancel_other_and_downgrades_to_skip(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.upgrade(empty_pg_url, RANGES) == (RANGES,)
    engine = sa.create_engine(empty_pg_url)
    policy = "SELECT overlap_policy FROM scheduled_tasks"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_INSERT))
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="overlap_policy"):
            conn.execute(sa.text("UPDATE scheduled_tasks SET overlap_policy = 'buffer_one'"))

        assert migrations.upgrade(empty_pg_url) == (HEAD,)
        assert_matches_metadata(empty_pg_url, reference_schema)
        for value in ("buffer_one", "cancel_other"):
            with engine.begin() as conn:
                conn.execute(sa.text(f"UPDATE scheduled_tasks SET overlap_policy = '{value}'"))
                assert conn.execute(sa.text(policy)).scalar_one() == value
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="overlap_policy"):
            conn.execute(sa.text("UPDATE scheduled_tasks SET overlap_policy = 'queue_all'"))

        assert migrations.downgrade(empty_pg_url, RANGES) == (RANGES,)
        with engine.begin() as conn:
            assert conn.execute(sa.text(policy)).scalar_one() == "skip"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_rerun_revision_links_runs_keeps_reruns_of_purged_runs_and_downgrades(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.upgrade(empty_pg_url, CANCEL) == (CANCEL,)
    engine = sa.create_engine(empty_pg_url)
    insert_run = (
        'INSERT INTO task_executions (task_name, celery_task_id, "trigger", status) '
        "VALUES ('app.report', :id, 'manual', 'failed') RETURNING id"
    )
    audit = (
        "INSERT INTO audit_log (principal, action, target_type) VALUES ('key:1', :a, 'execution')"
    )
    try:
        with engine.begin() as conn:
            original = conn.execute(sa.text(insert_run), {"id": "a"}).scalar_one()
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="action"):
            conn.execute(sa.text(audit), {"a": "rerun"})

        assert migrations.upgrade(empty_pg_url) == (HEAD,)
        assert_matches_metadata(empty_pg_url, reference_schema)
        with engine.begin() as conn:
            again = conn.execute(sa.text(insert_run), {"id": "b"}).scalar_one()
            conn.execute(
                sa.text("UPDATE task_executions SET rerun_of = :o WHERE id = :i"),
                {"o": original, "i": again},
            )
            conn.execute(sa.text(audit), {"a": "rerun"})
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="rerun_of"):
            conn.execute(
                sa.text("UPDATE task_executions SET rerun_of = 999999 WHERE id = :i"), {"i": again}
            )
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM task_executions WHERE id = :o"), {"o": original})
            left = conn.execute(sa.text("SELECT id, rerun_of FROM task_executions")).all()
        assert [tuple(row) for row in left] == [(again, None)], "the rerun outlives its original"

        assert migrations.downgrade(empty_pg_url, CANCEL) == (CANCEL,)
        columns = {c["name"] for c in sa.inspect(engine).get_columns("task_executions")}
        assert "rerun_of" not in columns
        with engine.begin() as conn:
            actions = conn.execute(sa.text("SELECT action FROM audit_log")).scalars().all()
        assert actions == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_pause_rules_revision_adds_its_columns_with_defaults_and_downgrades(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.upgrade(empty_pg_url, RERUNS) == (RERUNS,)
    engine = sa.create_engine(empty_pg_url)
    read = "SELECT failure_streak, pause_after_failures, pause_note FROM scheduled_tasks"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_INSERT))

        assert migrations.upgrade(empty_pg_url) == (HEAD,)
        assert_matches_metadata(empty_pg_url, reference_schema)
        with engine.begin() as conn:
            assert tuple(conn.execute(sa.text(read)).one()) == (0, None, None)
            conn.execute(sa.text(SEED_INSERT.replace("sync_accounts_hourly", "second")))
            conn.execute(sa.text("UPDATE scheduled_tasks SET pause_after_failures = 3"))
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="pause_after"):
            conn.execute(sa.text("UPDATE scheduled_tasks SET pause_after_failures = 0"))

        assert migrations.downgrade(empty_pg_url, RERUNS) == (RERUNS,)
        columns = {c["name"] for c in sa.inspect(engine).get_columns("scheduled_tasks")}
        assert not columns & {"failure_streak", "pause_after_failures", "pause_note"}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_max_runs_revision_adds_a_nullable_limit_and_downgrades(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.upgrade(empty_pg_url, PAUSE_RULES) == (PAUSE_RULES,)
    engine = sa.create_engine(empty_pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_INSERT))
        assert migrations.upgrade(empty_pg_url) == (HEAD,)
        assert_matches_metadata(empty_pg_url, reference_schema)
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT max_runs FROM scheduled_tasks")).scalar() is None
            conn.execute(sa.text("UPDATE scheduled_tasks SET max_runs = 0"))
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="max_runs"):
            conn.execute(sa.text("UPDATE scheduled_tasks SET max_runs = -1"))
        assert migrations.downgrade(empty_pg_url, PAUSE_RULES) == (PAUSE_RULES,)
        columns = {c["name"] for c in sa.inspect(engine).get_columns("scheduled_tasks")}
        assert not columns & {"max_runs", "exclusions"}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_backfill_revision_admits_the_trigger_and_downgrades_its_rows(
    empty_pg_url: str, reference_schema: dict[str, Any]
) -> None:
    assert migrations.upgrade(empty_pg_url, EXCLUSIONS) == (EXCLUSIONS,)
    engine = sa.create_engine(empty_pg_url)
    insert = (
        "INSERT INTO task_executions (scheduled_task_id, scheduled_for, task_name, "
        "celery_task_id, \"trigger\", status, created_at) VALUES (1, :slot, 'seed.fetch', "
        ":cid, 'backfill', :status, now())"
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_INSERT))
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="trigger"):
            conn.execute(
                sa.text(insert), {"slot": "2026-01-01T00:00Z", "cid": "a", "status": "queued"}
            )
        assert migrations.upgrade(empty_pg_url) == (HEAD,)
        assert_matches_metadata(empty_pg_url, reference_schema)
        with engine.begin() as conn:
            for slot, cid, status in (
                ("2026-01-01T00:00Z", "a", "success"),
                ("2026-01-02T00:00Z", "b", "queued"),
            ):
                conn.execute(sa.text(insert), {"slot": slot, "cid": cid, "status": status})
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (principal, action, target_type, target_id) "
                    "VALUES ('key:1', 'backfill', 'schedule', '1')"
                )
            )
        assert migrations.downgrade(empty_pg_url, EXCLUSIONS) == (EXCLUSIONS,)
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text('SELECT celery_task_id, "trigger", status FROM task_executions ORDER BY 1')
            ).all()
            assert [tuple(row) for row in rows] == [
                ("a", "schedule", "success"),
                ("b", "schedule", "revoked"),
            ]
            assert conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_upgrades_take_turns(empty_pg_url: str) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: migrations.upgrade_from(empty_pg_url), range(3)))
    assert sorted(before for before, _ in results) == [(), (HEAD,), (HEAD,)]
    assert {after for _, after in results} == {(HEAD,)}


@pytest.mark.postgres
def test_the_seed_insert_runs_verbatim_after_migrate(empty_pg_url: str) -> None:
    from dataforge_scheduler.core.enums import MisfirePolicy, OverlapPolicy, TaskStatus, TaskType
    from dataforge_scheduler.sql.engine import make_session_factory
    from dataforge_scheduler.sql.models import ScheduledTask

    migrations.upgrade(empty_pg_url)
    engine = sa.create_engine(empty_pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_INSERT))
        with make_session_factory(engine)() as session:
            row = session.scalars(sa.select(ScheduledTask)).one()
    finally:
        engine.dispose()
    assert (row.name, row.task_type, row.interval_seconds) == (
        "sync_accounts_hourly",
        TaskType.INTERVAL,
        3600,
    )
    assert row.status is TaskStatus.ACTIVE
    assert row.misfire_policy is MisfirePolicy.RUN_ONCE
    assert row.overlap_policy is OverlapPolicy.SKIP
    assert (row.run_count, row.version, row.is_system) == (0, 1, False)
    assert row.created_at.tzinfo is not None


@pytest.mark.postgres
def test_tables_from_init_db_are_refused_until_stamped(
    empty_pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(empty_pg_url)
    create_all(engine)
    engine.dispose()

    assert cli.main(["migrate", "--database-url", empty_pg_url]) == 1
    err = capsys.readouterr().err
    assert "already exist but dataforge_alembic_version records no migration" in err
    assert "migrate --stamp" in err

    assert migrations.stamp(empty_pg_url) == (HEAD,)
    assert migrations.upgrade(empty_pg_url) == (HEAD,)


@pytest.mark.postgres
def test_stamp_refuses_tables_that_differ_from_head(empty_pg_url: str) -> None:
    migrations.upgrade(empty_pg_url)
    engine = sa.create_engine(empty_pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE dataforge_alembic_version"))
        conn.execute(sa.text("ALTER TABLE scheduled_tasks DROP COLUMN description"))
    engine.dispose()
    with pytest.raises(ConflictError, match="differ from this version's schema"):
        migrations.stamp(empty_pg_url)
    assert migrations.current_revisions(empty_pg_url) == ()


def test_sqlite_gets_the_same_schema_as_create_all(tmp_path: Path) -> None:
    """Indexes by their DDL; tables by what SQLite reports of them (a revision that
    rebuilds a table in batch mode writes the same table in a different text order)."""
    migrated, created = tmp_path / "migrated.db", tmp_path / "created.db"
    assert migrations.upgrade(f"sqlite:///{migrated}") == (HEAD,)
    engine = sa.create_engine(f"sqlite:///{created}")
    create_all(engine)
    engine.dispose()

    def schema(path: Path) -> dict[str, Any]:
        engine = sa.create_engine(f"sqlite:///{path}")
        query = (
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name != 'dataforge_alembic_version' ORDER BY name"
        )
        try:
            with engine.connect() as conn:
                found: dict[str, Any] = {
                    "indexes": [tuple(row) for row in conn.execute(sa.text(query))]
                }
            inspector = sa.inspect(engine)
            for table in sorted(LIBRARY_TABLES):
                found[table] = {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"], str(c["default"]))
                        for c in inspector.get_columns(table)
                    ],
                    "pk": inspector.get_pk_constraint(table),
                    "unique": sorted(
                        (u["name"], tuple(u["column_names"]))
                        for u in inspector.get_unique_constraints(table)
                    ),
                    "checks": sorted(
                        (c["name"], " ".join(c["sqltext"].split()))
                        for c in inspector.get_check_constraints(table)
                    ),
                    "fks": sorted(
                        (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                        for f in inspector.get_foreign_keys(table)
                    ),
                }
            return found
        finally:
            engine.dispose()

    assert schema(migrated) == schema(created)
    assert len(schema(migrated)["indexes"]) > len(LIBRARY_TABLES)
    checks = {name for name, _ in schema(migrated)["scheduled_tasks"]["checks"]}
    assert "ck_scheduled_tasks_misfire_grace_non_negative" in checks
    assert migrations.schema_diff(f"sqlite:///{migrated}") == []
    assert migrations.downgrade(f"sqlite:///{migrated}") == ()
    assert table_names(f"sqlite:///{migrated}") & LIBRARY_TABLES == set()


# ---------------------------------------------------------------- a host's Alembic env

HOST_ENV = """\
import sqlalchemy as sa
from alembic import context

import dataforge_scheduler

host_metadata = sa.MetaData()
sa.Table("host_things", host_metadata, sa.Column("id", sa.Integer, primary_key=True))

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=[host_metadata, dataforge_scheduler.metadata],
)
with context.begin_transaction():
    context.run_migrations()
"""

HOST_REVISION = """\
import sqlalchemy as sa
from alembic import op

revision = "host0001"
down_revision = None
branch_labels = ("host",)
depends_on = None


def upgrade():
    op.create_table("host_things", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("host_things")
"""


def host_config(tmp_path: Path, library_location: str) -> Config:
    """A host's Alembic config, built in code: its own versions plus the library's."""
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(HOST_ENV, encoding="utf-8")
    (tmp_path / "versions" / "host0001_things.py").write_text(HOST_REVISION, encoding="utf-8")
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    config.set_main_option("path_separator", "space")
    config.set_main_option("version_locations", f"{tmp_path / 'versions'} {library_location}")
    return config


@pytest.mark.parametrize(
    "location",
    [migrations.VERSIONS_RESOURCE, migrations.version_location()],
    ids=["package-resource", "path"],
)
def test_a_host_env_finds_the_library_branch(tmp_path: Path, location: str) -> None:
    script = ScriptDirectory.from_config(host_config(tmp_path, location))
    assert set(script.get_heads()) == {"host0001", HEAD}
    found = script.get_revision(f"{migrations.BRANCH_LABEL}@head")
    assert found is not None
    assert found.revision == HEAD
    assert migrations.BRANCH_LABEL in found.branch_labels


@pytest.mark.postgres
def test_a_host_env_upgrades_and_downgrades_the_library_branch(
    tmp_path: Path, empty_pg_url: str
) -> None:
    config = host_config(tmp_path, migrations.VERSIONS_RESOURCE)
    engine = sa.create_engine(empty_pg_url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "heads")
        with engine.connect() as conn:
            versions = set(conn.scalars(sa.text("SELECT version_num FROM alembic_version")))
        assert versions == {"host0001", HEAD}
        assert schema_diff(engine) == []
        names = set(sa.inspect(engine).get_table_names())
        assert LIBRARY_TABLES | {"host_things"} <= names
        assert "dataforge_alembic_version" not in names

        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, f"{migrations.BRANCH_LABEL}@base")
        names = set(sa.inspect(engine).get_table_names())
        assert names & LIBRARY_TABLES == set()
        assert "host_things" in names
    finally:
        engine.dispose()
