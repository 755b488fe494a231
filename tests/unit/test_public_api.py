"""The package's public surface: sorted, importable, and what DESIGN.md promises."""

from __future__ import annotations

import re
from pathlib import Path

import dataforge_scheduler
from dataforge_scheduler.settings import Settings, settings_table_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = dataforge_scheduler.__all__
    # isort-style, as ruff's RUF022 sorts it: CONSTANTS, then Classes, then functions
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert len(names) == len(set(names))
    missing = [n for n in names if not hasattr(dataforge_scheduler, n)]
    assert missing == []


# every name DESIGN.md's table promises from the package root
DESIGN_NAMES = {
    "Settings",
    "setup",
    "Runtime",
    "DataForgeError",
    "TaskType",
    "TaskStatus",
    "ExecutionStatus",
    "ScheduledTask",
    "TaskExecution",
    "metadata",
    "DataForgeTask",
    "DatabaseScheduler",
    "register_task",
    "registry",
    "REGISTERED_TASKS",
    "task_log",
}


def test_every_design_name_is_exported() -> None:
    assert set(dataforge_scheduler.__all__) >= DESIGN_NAMES


def test_the_exports_are_the_real_objects() -> None:
    from dataforge_scheduler.celery.beat import DatabaseScheduler
    from dataforge_scheduler.celery.task import DataForgeTask
    from dataforge_scheduler.celery.tasklog import task_log
    from dataforge_scheduler.sql.models import metadata

    assert dataforge_scheduler.DataForgeTask is DataForgeTask
    assert dataforge_scheduler.DatabaseScheduler is DatabaseScheduler
    assert dataforge_scheduler.task_log is task_log
    assert dataforge_scheduler.metadata is metadata


def test_metadata_holds_the_library_tables() -> None:
    tables = {"scheduled_tasks", "task_executions", "audit_log"}
    assert set(dataforge_scheduler.metadata.tables) == tables


def test_py_typed_is_shipped() -> None:
    assert (Path(dataforge_scheduler.__file__).parent / "py.typed").exists()


def _between_markers(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, flags=re.DOTALL)
    assert match, f"markers for {name} not found"
    return match.group(1).strip()


def test_readme_configuration_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _between_markers(readme, "settings-table") == settings_table_markdown(Settings).strip()


def test_docs_configuration_table_matches_settings() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert _between_markers(doc, "settings-table") == settings_table_markdown(Settings).strip()
