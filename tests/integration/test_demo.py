"""The demo and api commands run as a user runs them: a real process, a real port, signals.

The embedded demo needs no service; the other two tests point the demo and the ``api``
command at the test PostgreSQL and Redis. Each test reads the port the process printed
(``--port 0``: the OS picks a free one), talks to the API over HTTP and stops the process
with a signal, expecting a clean exit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.procs import REPO_ROOT, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.worker]

KEY = "demo-key"
START_TIMEOUT = 30.0
RUN_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
_URL = re.compile(r"(http://127\.0\.0\.1:\d+)/api/v1")


class Command:
    """One ``python -m dataforge_scheduler ...`` process, its output in a file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dataforge_scheduler", *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def base_url(self) -> str:
        def printed() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.output()}")
            match = _URL.search(self.output())
            return match.group(1) if match else None

        return wait_until(printed, timeout=START_TIMEOUT, message="the API URL on the console")

    def interrupt(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        command.kill()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    env.update(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def finished_heartbeat(client: httpx.Client) -> dict[str, Any] | None:
    """The first finished heartbeat run, in full (with its log), once there is one."""
    tasks = client.get("/tasks").json()["items"]
    heartbeat = next(t for t in tasks if t["task_name"] == "demo.heartbeat")
    runs = client.get(f"/tasks/{heartbeat['id']}/executions").json()["items"]
    done = [run for run in runs if run["status"] == "success"]
    if not done:
        return None
    detail: dict[str, Any] = client.get(f"/executions/{done[0]['id']}").json()
    return detail


def check_demo_run(command: Command) -> str:
    """List the tasks, wait for a heartbeat with its log, stop the demo; its output."""
    url = command.base_url()
    with httpx.Client(base_url=f"{url}/api/v1", params={"api_key": KEY}, timeout=5) as client:
        tasks = client.get("/tasks")
        assert tasks.status_code == 200, tasks.text
        names = {t["task_name"] for t in tasks.json()["items"]}
        assert {"demo.heartbeat", "demo.report"} <= names
        run = wait_until(
            lambda: finished_heartbeat(client), timeout=RUN_TIMEOUT, message="a heartbeat run"
        )
    log_lines = (run["log"] or "").splitlines()
    assert len(log_lines) >= 3, run
    assert run["log_lines"] == len(log_lines), run
    assert log_lines[0].startswith("hello from ")
    assert command.interrupt() == 0, command.output()
    output = command.output()
    assert "Traceback" not in output, output
    assert re.search(r"dispatch demo\.heartbeat\s+run #\d+ \(schedule", output), output
    assert re.search(r"log\s+demo\.heartbeat #\d+\s+hello from ", output), output
    assert re.search(r"success\s+demo\.heartbeat #\d+\s+after [\d.]+ s: result ", output), output
    assert "stopping (SIGINT)" in output
    return output


def test_embedded_demo_runs_and_stops_cleanly(tmp_path: Path, commands: list[Command]) -> None:
    data_dir = tmp_path / "data"
    demo = Command(
        ["demo", "--port", "0", "--duration", "60", "--data-dir", str(data_dir)],
        env=clean_env(),
        log_path=tmp_path / "demo.log",
    )
    commands.append(demo)
    output = check_demo_run(demo)
    assert f"data dir   {data_dir}" in output
    assert re.search(r"curl 'http://127\.0\.0\.1:\d+/api/v1/tasks\?api_key=demo-key'", output)
    assert (data_dir / "dataforge-demo.db").exists()


def test_demo_on_postgresql_and_redis(
    tmp_path: Path,
    commands: list[Command],
    pg_url: str,
    pg: Any,
    redis_url: str,
    redis_client: Any,
    key_prefix: str,
) -> None:
    services = ["--database-url", pg_url, "--redis-url", redis_url]
    demo = Command(
        ["demo", "--port", "0", "--duration", "60", *services],
        env=clean_env(DATAFORGE_KEY_PREFIX=key_prefix),
        log_path=tmp_path / "demo.log",
    )
    commands.append(demo)
    output = check_demo_run(demo)
    assert "data dir" not in output
    assert "postgresql+psycopg://" in output
    # the run's log went through the real Redis, under the test's key prefix
    assert any(key.startswith(f"{key_prefix}:".encode()) for key in redis_client.keys("*"))


LONG_KEY = "api-command-key-0123456789"


def test_api_command_serves_health_from_postgresql(
    tmp_path: Path, commands: list[Command], pg_url: str, pg: Any, redis_url: str, key_prefix: str
) -> None:
    api = Command(
        ["api", "--port", "0", "--database-url", pg_url, "--redis-url", redis_url],
        env=clean_env(DATAFORGE_API_KEYS=LONG_KEY, DATAFORGE_KEY_PREFIX=key_prefix),
        log_path=tmp_path / "api.log",
    )
    commands.append(api)
    url = api.base_url()
    health = httpx.get(f"{url}/api/v1/health", timeout=5)
    assert health.status_code == 200, health.text
    assert health.json() == {
        "status": "ok",
        "database": "ok",
        "redis": "ok",
        "outbox": {"waiting": 0, "oldest_age_seconds": None, "warning": None},
    }
    assert httpx.get(f"{url}/api/v1/tasks", timeout=5).status_code == 401
    listed = httpx.get(f"{url}/api/v1/tasks", headers={"X-API-Key": LONG_KEY}, timeout=5)
    assert listed.status_code == 200, listed.text
    assert api.interrupt(signal.SIGTERM) == 0, api.output()
    assert "Traceback" not in api.output()
    assert "API stopped" in api.output()


def test_api_command_refuses_a_short_key_without_quoting_it(
    tmp_path: Path, pg_url: str, redis_url: str, key_prefix: str
) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "dataforge_scheduler", "api", "--port", "0"),
            *("--database-url", pg_url, "--redis-url", redis_url),
        ],
        env=clean_env(DATAFORGE_API_KEYS="k-1", DATAFORGE_KEY_PREFIX=key_prefix),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "keys need at least 16" in done.stderr
    assert "k-1" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
