"""The docs cover the public surface, and every link in them leads somewhere.

Checked here: every name in ``dataforge_scheduler.__all__`` and every public name of
DESIGN.md's table appears in some page of ``docs/``; every relative link (and its
``#anchor``) in ``docs/`` and the README resolves; ``mkdocs.yml``'s nav and ``docs/``
list the same pages. (The configuration tables are checked in ``test_public_api.py``.)
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

import dataforge_scheduler

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# DESIGN.md's "Public names" table (DESIGN.md is not shipped in the repository, so its
# names are listed here), beyond what ``__all__`` already covers: the names importable
# from other modules, the trigger API, the command's subcommands and the enum values.
DESIGN_NAMES = [
    "Settings.from_env",
    "celery_broker_url",
    "celery_result_backend",
    "celery_timezone",
    "celery_broker_visibility_timeout",
    "celery_task_default_timeout",
    "celery_task_default_max_retries",
    "celery_task_retry_delay",
    "celery_task_retry_backoff",
    "celery_worker_concurrency",
    "celery_worker_prefetch_multiplier",
    "celery_beat_sync_every",
    "database_url",
    "redis_url",
    "api_keys",
    "key_prefix",
    "task_name_prefix",
    "dataforge_scheduler.metadata",
    "dataforge_scheduler.core.triggers",
    "CronTrigger",
    "IntervalTrigger",
    "DateTrigger",
    "ManualTrigger",
    "next_after",
    "trigger_for",
    "extend_lock",
    "dataforge_scheduler.api.create_app",
    "dataforge_scheduler.testing",
    "dataforge-scheduler init-db",
    "dataforge-scheduler check",
    "dataforge-scheduler demo",
    "dataforge-scheduler api",
    "dataforge-scheduler migrate",
]
# enum values DESIGN.md names, as they appear in code spans
DESIGN_VALUES = [
    "cron",
    "interval",
    "date",
    "manual",
    "active",
    "paused",
    "completed",
    "pending",
    "running",
    "success",
    "failed",
    "retrying",
    "skipped",
    "lost",
    "revoked",
]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


@cache
def docs_text() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in doc_pages())


def without_code_blocks(text: str) -> str:
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor Python-Markdown's ``toc`` (mkdocs) and GitHub give a heading."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


@cache
def anchors(page: Path) -> frozenset[str]:
    text = without_code_blocks(page.read_text(encoding="utf-8"))
    return frozenset(slug(h) for h in _HEADING.findall(text))


def relative_links(page: Path) -> list[str]:
    text = without_code_blocks(page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # a link inside a code span is not a link
    return [
        target
        for target in _LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE)
    ]


def test_every_exported_name_is_documented() -> None:
    text = docs_text()
    missing = [
        name
        for name in dataforge_scheduler.__all__
        if not re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text)
    ]
    assert missing == [], f"public names no page of docs/ mentions: {missing}"


def test_every_design_name_is_documented() -> None:
    text = docs_text()
    missing = [name for name in DESIGN_NAMES if name not in text]
    missing += [value for value in DESIGN_VALUES if f"`{value}`" not in text]
    assert missing == [], f"DESIGN.md names no page of docs/ mentions: {missing}"


def link_pages() -> list[Path]:
    return [*doc_pages(), ROOT / "README.md"]


@pytest.mark.parametrize("page", link_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: {destination.relative_to(ROOT)} does not exist")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{fragment}")
    assert broken == [], f"broken links in {page.name}: {broken}"


def test_the_link_checker_sees_links_and_anchors() -> None:
    # guards the checker itself: a regex that matched nothing would pass every page
    links = relative_links(DOCS / "quickstart.md")
    assert "operations.md#in-your-own-alembic-environment" in links
    assert "in-your-own-alembic-environment" in anchors(DOCS / "operations.md")
    assert slug("Live logs (SSE)") == "live-logs-sse"
    assert slug('"My task doesn\'t run"') == "my-task-doesnt-run"
    assert slug("`dataforge-scheduler migrate`") == "dataforge-scheduler-migrate"


def test_mkdocs_nav_lists_every_page() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.findall(r"^\s+-\s+[^:\n]+:\s+(\S+\.md)\s*$", config, flags=re.MULTILINE)
    assert len(nav) == len(set(nav))
    assert sorted(nav) == sorted(page.name for page in doc_pages())
