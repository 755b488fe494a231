"""Every import contract in pyproject.toml can fail: each is broken on purpose in a copy of
the package, and ``lint-imports`` must name exactly that contract as broken.

A contract that no injected import can break would be decoration; this is the proof
that the arrows of docs/architecture.md are checked, not assumed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "dataforge_scheduler"

# contract id -> (module file to edit, the import that breaks it and no other contract)
BREAKS = {
    "floors": ("sql/models.py", "import dataforge_scheduler.runtime"),
    "pure-core": ("core/enums.py", "import celery"),
    "api-without-celery": ("api/routing.py", "import kombu"),
    "redis-py-in-redis-room": ("memory/locks.py", "import redis"),
    "sqlalchemy-in-sql-room": ("celery/outcomes.py", "import sqlalchemy"),
}


def _contracts() -> dict[str, str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["id"]: c["name"] for c in config["tool"]["importlinter"]["contracts"]}


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("contracts")
    shutil.copytree(PACKAGE, where / "dataforge_scheduler", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    return where


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert command is not None, "import-linter is part of the test extra"
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [command, "--config", str(where / "pyproject.toml"), "--no-cache"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _verdicts(output: str, names: dict[str, str]) -> dict[str, str]:
    flat = " ".join(output.split())  # long names wrap in the report
    verdicts = {}
    for contract_id, name in names.items():
        found = re.search(re.escape(" ".join(name.split())) + r" (KEPT|BROKEN)", flat)
        assert found, f"contract {contract_id!r} missing from the report:\n{output}"
        verdicts[contract_id] = found.group(1)
    return verdicts


def test_every_contract_has_a_breaking_import_here() -> None:
    assert set(BREAKS) == set(_contracts())


def test_the_unmodified_copy_keeps_every_contract(copy: Path) -> None:
    result = _lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_verdicts(result.stdout, _contracts()).values()) == {"KEPT"}


@pytest.mark.parametrize("contract_id", sorted(BREAKS))
def test_the_contract_fails_when_its_rule_is_broken(copy: Path, contract_id: str) -> None:
    module, line = BREAKS[contract_id]
    path = copy / "dataforge_scheduler" / module
    original = path.read_text()
    path.write_text(
        original.replace(
            "from __future__ import annotations\n",
            f"from __future__ import annotations\n\n{line}  # noqa\n",
            1,
        )
    )
    try:
        result = _lint(copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    verdicts = _verdicts(result.stdout, _contracts())
    assert verdicts == {cid: "BROKEN" if cid == contract_id else "KEPT" for cid in verdicts}
