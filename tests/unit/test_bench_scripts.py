"""Every benchmark script still imports and parses its arguments.

The benchmarks run by hand, not in CI, so a renamed module would break one unnoticed
(``bench/api_latency.py`` imported a module that had moved). ``--help`` imports the
script with everything it imports and exits before touching a service.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(path.name for path in BENCH.glob("[a-z]*.py"))


def test_the_benchmarks_are_found() -> None:
    assert "api_latency.py" in SCRIPTS
    assert "scheduler_scale.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_imports_and_shows_its_usage(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}")
