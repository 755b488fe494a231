"""Shared plumbing of the benchmarks: scratch databases, Redis namespaces, processes, figures.

Every benchmark runs against the real services the tests use, in its own PostgreSQL
database (created here, dropped afterwards) and under its own Redis key prefix (every key
under it deleted afterwards), so a run never sees another run's rows, keys or messages.
``DATAFORGE_BENCH_DATABASE_URL`` (an admin URL; default the local ``postgres`` database)
and ``DATAFORGE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) pick the
services. Nothing here runs at import time, and nothing here imports dataforge_scheduler
or redis at module level: ``_peers.py`` imports it under the peers' own interpreter.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ADMIN_URL_VAR = "DATAFORGE_BENCH_DATABASE_URL"
REDIS_URL_VAR = "DATAFORGE_BENCH_REDIS_URL"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_VAR, DEFAULT_ADMIN_URL)


def redis_url() -> str:
    return os.environ.get(REDIS_URL_VAR, DEFAULT_REDIS_URL)


def new_prefix(kind: str) -> str:
    """A Redis key prefix unique to this run."""
    return f"dfbench-{kind}-{uuid.uuid4().hex[:8]}"


@contextmanager
def scratch_database(*, admin: str | None = None) -> Iterator[str]:
    """A database made for this block and dropped after it (``WITH (FORCE)``)."""
    engine = sa.create_engine(admin or admin_url(), isolation_level="AUTOCOMMIT")
    name = f"dataforge_bench_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = sa.engine.make_url(admin or admin_url()).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextmanager
def redis_namespace(url: str, prefix: str) -> Iterator[redis.Redis]:
    """A client on ``url``; every key under ``prefix:`` is deleted when the block ends."""
    import redis  # here, not above: the peers' virtualenv (see _peers.py) has no redis

    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()


def service_env(*, database_url: str, redis: str, prefix: str, **extra: str) -> dict[str, str]:
    """Environment of a benchmark's worker: its services, key prefix and broker prefix."""
    env = dict(os.environ)
    env.update(
        {
            "DATAFORGE_DATABASE_URL": database_url,
            "DATAFORGE_REDIS_URL": redis,
            "DATAFORGE_CELERY_BROKER_URL": redis,
            "DATAFORGE_CELERY_RESULT_BACKEND": redis,
            "DATAFORGE_KEY_PREFIX": prefix,
            # kombu prefixes every broker and result key with it (queues, unacked, pidbox)
            "DATAFORGE_BENCH_BROKER_PREFIX": f"{prefix}:broker:",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(BENCH_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
            ),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def wait_for(
    condition: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str
) -> T:
    """Poll ``condition`` until it returns something truthy; RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Worker:
    """A ``celery worker`` subprocess in its own process group, output to a file."""

    def __init__(self, app: str, *, env: Mapping[str, str], log_path: Path, args: Sequence[str]):
        self.command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *args,
        ]
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60.0) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=BENCH_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = re.compile(r"\S+@\S+ ready\.")

        def is_ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.output()[-3000:]}")
            return bool(ready.search(self.output()))

        try:
            wait_for(is_ready, timeout=timeout, interval=0.1, what="the worker to be ready")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; its output:\n{self.output()[-3000:]}") from None
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, *, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    text = Path("/proc/self/status").read_text(encoding="ascii")
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    if match is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return int(match.group(1)) / 1024


def machine() -> str:
    """Cores and load average, printed with every result: this machine is shared."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, p95 and max of ``samples`` (seconds)."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}
