"""Real Celery worker and beat processes for integration tests.

``CeleryProcess`` starts ``celery -A <app> worker|beat`` as a subprocess in its own
process group, with the test's database, Redis and key prefix in the environment, writes
its output to a log file, and stops it (SIGTERM, then SIGKILL). ``wait_until`` polls a
condition with an explicit timeout: tests wait on facts, never on sleeps.

Test app modules read their configuration from the environment that ``service_env``
builds, so every process of one test shares the same database, Redis key prefix and
broker key prefix, and no two tests see each other's messages.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]


def service_env(
    *, database_url: str, redis_url: str, key_prefix: str, **extra: str
) -> dict[str, str]:
    """Environment for a test app module: same services and namespaces for every process."""
    env = dict(os.environ)
    env.update(
        {
            "DATAFORGE_DATABASE_URL": database_url,
            "DATAFORGE_REDIS_URL": redis_url,
            "DATAFORGE_CELERY_BROKER_URL": redis_url,
            "DATAFORGE_CELERY_RESULT_BACKEND": redis_url,
            "DATAFORGE_KEY_PREFIX": key_prefix,
            # kombu's Redis transport prefixes every broker key with this (queues, unacked,
            # pidbox), so concurrent tests and CI runs never share a queue
            "DATAFORGE_TEST_BROKER_PREFIX": f"{key_prefix}:broker:",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
            ),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message} (last: {last!r})")


class CeleryProcess:
    """One ``celery`` subprocess (worker or beat) with its output captured to a file."""

    def __init__(
        self,
        kind: str,
        app: str,
        *,
        env: Mapping[str, str],
        log_path: Path,
        args: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        if kind not in {"worker", "beat"}:
            raise ValueError(f"kind must be worker or beat, not {kind!r}")
        self.kind = kind
        self.app = app
        self.env = dict(env)
        self.log_path = log_path
        self.args = list(args or [])
        self.prefix = list(prefix or [])  # a wrapper command, e.g. faketime
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # by restart_if_dead

    def command(self) -> list[str]:
        base = [
            *self.prefix,
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            self.kind,
            "--loglevel",
            "INFO",
        ]
        if self.kind == "worker":
            base += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        return base + self.args

    def start(self) -> CeleryProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "process not started"
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, pattern: str, *, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.output()[-4000:]
                raise AssertionError(
                    f"celery {self.kind} exited with {self.proc.returncode}:\n{tail}"
                )
            return regex.search(self.output())

        return wait_until(found, timeout=timeout, message=f"{pattern!r} in {self.kind} output")

    def wait_ready(self, *, timeout: float = 40.0) -> CeleryProcess:
        if self.kind == "worker":
            self.wait_for_output(r"celery@\S+ ready\.", timeout=timeout)
        else:
            self.wait_for_output(r"beat: Starting\.\.\.", timeout=timeout)
        return self

    def children(self) -> list[int]:
        """PIDs of the worker's pool processes (prefork children)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the main process and its pool children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self, *, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart_if_dead(self) -> bool:
        """Start the process again if it died, as a real one's supervisor would; whether
        it did.

        A Redis restart can kill a Celery worker's main process: kombu's Redis channel,
        closing the lost broker connection, builds a client from a connection already
        released (``Unrecoverable error: AttributeError("'NoneType' object has no
        attribute 'hostname'")`` in ``_connparams``, via ``restore_unacked``); the worker
        stops consuming, and may not exit. A test of what survives an outage restarts
        it rather than judge Celery's own reconnection."""
        crashed = self.output().count("Unrecoverable error") > self.restarts
        exited = self.proc is not None and self.proc.poll() is not None
        if not (crashed or exited):
            return False
        self.restarts += 1
        self.kill()
        self.start()
        return True

    def __enter__(self) -> CeleryProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
