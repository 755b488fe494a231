#!/usr/bin/env bash
# The README's demo command, checked as a new user meets it (CI runs this from .ci/run):
# a fresh virtualenv, `pip install ".[demo]"`, then `dataforge-scheduler demo --duration 25`
# in the background. Checks: the API lists the demo tasks (`curl .../api/v1/tasks`), a run
# and its task_log lines show on the console within ten seconds, no traceback, and the demo
# exits 0 (it exits 1 when no run succeeded). Leaves no process or directory behind.
# Environment: PYTHON (python3), DEMO_PORT (8847), DEMO_DURATION (25).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
PORT="${DEMO_PORT:-8847}"
DURATION="${DEMO_DURATION:-25}"
FIRST_RUN_WITHIN=10
work="$(mktemp -d "${TMPDIR:-/tmp}/dataforge-demo-smoke.XXXXXX")"
demo_pid=""

say() { printf '%s\n' "$*"; }
ok() { say "ok    $*"; }
fail() { say "FAIL  $*"; exit 1; }

cleanup() {
  local status=$?
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$demo_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/demo.log" ]; then
    say "--- demo output"
    cat "$work/demo.log"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "== fresh virtualenv: pip install \".[demo]\""
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet ".[demo]"
ok "installed $("$work/venv/bin/python" -m pip show dataforge-scheduler | sed -n 's/^Version: //p')"

say "== dataforge-scheduler demo --duration $DURATION (port $PORT)"
SECONDS=0
"$work/venv/bin/dataforge-scheduler" demo --port "$PORT" --duration "$DURATION" \
  --data-dir "$work/data" >"$work/demo.log" 2>&1 &
demo_pid=$!

alive() { kill -0 "$demo_pid" 2>/dev/null; }

url="http://127.0.0.1:$PORT/api/v1/tasks?api_key=demo-key"
listed=""
while [ "$SECONDS" -le 20 ] && alive; do
  if body="$(curl -fsS "$url" 2>/dev/null)" \
    && grep -q '"task_name":"demo.heartbeat"' <<<"$body" \
    && grep -q '"task_name":"demo.report"' <<<"$body"; then
    listed=yes
    break
  fi
  sleep 0.2
done
[ -n "$listed" ] || fail "curl $url did not list the demo tasks"
ok "curl $url lists demo.heartbeat and demo.report"

success_line='^[0-9:]{8}  success +demo\.heartbeat #[0-9]+ +after '
log_line='^[0-9:]{8}  log +demo\.heartbeat #[0-9]+ +hello from '
until grep -qE "$success_line" "$work/demo.log"; do
  [ "$SECONDS" -le "$FIRST_RUN_WITHIN" ] || fail "no successful run within ${FIRST_RUN_WITHIN} s"
  alive || fail "the demo exited before a run succeeded"
  sleep 0.1
done
ok "a run succeeded ${SECONDS} s after start (limit ${FIRST_RUN_WITHIN} s)"
grep -qE "$log_line" "$work/demo.log" || fail "no task_log line of the run on the console"
grep -qE '^[0-9:]{8}  dispatch +demo\.heartbeat ' "$work/demo.log" || fail "no dispatch shown"
ok "the console shows the dispatch, the run's task_log lines and its result"

code=0
wait "$demo_pid" || code=$?
demo_pid=""
[ "$code" -eq 0 ] || fail "the demo exited $code (1 means no run succeeded)"
! grep -q "Traceback" "$work/demo.log" || fail "a traceback on the console"
ok "the demo stopped by itself after ${DURATION} s and exited 0, no traceback"
say "$(grep '^demo stopped:' "$work/demo.log")"
