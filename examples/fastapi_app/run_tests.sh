#!/usr/bin/env bash
# The service's tests in a fresh virtualenv, from its own requirements files, as a new
# user would run them: dataforge-scheduler from this checkout (requirements-dev.txt).
#
#   examples/fastapi_app/run_tests.sh [pytest args...]
#
# The venv is made under .venv-tests here (reused if present; delete it for a fresh one).
# DATAFORGE_TEST_DATABASE_URL / DATAFORGE_TEST_REDIS_URL switch the tests to a real
# PostgreSQL / Redis (docs/testing.md); by default they need no service.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=".venv-tests"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
