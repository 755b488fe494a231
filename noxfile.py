"""The only place commands live: CI, the README and the docs call these sessions.

nox -s tests       # the whole test suite (needs PostgreSQL and Redis; see README)
nox -s lint        # ruff check + ruff format --check
nox -s typecheck   # mypy --strict on src/
nox -s imports     # import-linter: the arrows of DESIGN.md
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "imports", "tests", "examples"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
LINT_PATHS = [p for p in ("src", "tests", "bench", "examples", "noxfile.py") if Path(p).exists()]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite: unit, contract, integration and API tests."""
    session.install("-e", ".[test]")
    args = session.posargs or ["-q", "-p", "no:cacheprovider"]
    session.run("pytest", *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ (settings in pyproject.toml)."""
    session.install("-e", ".[test]", "mypy>=1.10", "celery-types>=0.22")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def imports(session: nox.Session) -> None:
    """import-linter contracts: the rooms and floors of DESIGN.md."""
    session.install("-e", ".", "import-linter>=2.0")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """The FastAPI example's own tests, installed from its requirements files."""
    session.chdir("examples/fastapi_app")  # requirements-dev.txt's "-e ../.." is relative to it
    session.install("-r", "requirements-dev.txt")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=False)
def demo_smoke(session: nox.Session) -> None:
    """Install into a fresh virtualenv and run the demo: the API answers, a run completes."""
    session.run("bash", "scripts/demo_smoke.sh", external=True)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the docs with mkdocs, failing on a broken link or anchor."""
    session.install("mkdocs>=1.6")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", str(Path(session.create_tmp()) / "site")
    )
