"""The embedded demo: database, broker, worker, beat and API in one process.

``Demo(options, data_dir=..., console=...)`` builds a Celery app set up from
``demo_settings`` (a SQLite file, the ``memory://`` broker, ``cache+memory://`` results
and the in-process locks, logs and notices by default; a database URL and a Redis URL
switch to real services, the Redis URL serving as broker and result backend too),
wraps the runtime's dispatcher so every dispatch is shown, and registers the demo
tasks. ``prepare()`` checks the services and creates the tables and schedules.
``start()`` runs, each in a daemon thread, uvicorn serving the API under ``/api/v1``,
the ``RunNarrator`` and a Celery ``WorkController`` on the threads pool;
``start_scheduler()`` then a ``DatabaseScheduler`` loop calling ``tick()``. One process
is what lets ``memory://`` work: the broker delivers from the scheduler's thread to the
worker's (docs/internals.md §13). ``stop()`` asks every part to stop at once, then waits
for each: the scheduler within its one-second wait slice, the worker after the runs in
progress (a warm shutdown), uvicorn within two seconds.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.worker import WorkController

from dataforge_scheduler.api import create_app
from dataforge_scheduler.backends import MEMORY_URL
from dataforge_scheduler.celery.beat import DatabaseScheduler
from dataforge_scheduler.celery.maintenance import ensure_maintenance_schedules
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.core.context import current_run
from dataforge_scheduler.demo.console import Console, NarratingDispatcher, RunNarrator
from dataforge_scheduler.demo.tasks import ensure_demo_schedules, register_demo_tasks
from dataforge_scheduler.errors import BackendUnavailable, DataForgeError
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.serve import API_PREFIX, DEFAULT_HOST, DEFAULT_PORT, ApiServer, mount_api
from dataforge_scheduler.settings import Settings, key_values
from dataforge_scheduler.sql.models import create_all
from dataforge_scheduler.wiring import setup

__all__ = ["DEMO_API_KEY", "Demo", "DemoOptions", "demo_settings", "make_data_dir"]

logger = logging.getLogger(__name__)

#: The documented key of the demo when neither --api-key nor DATAFORGE_API_KEYS is given.
DEMO_API_KEY = "demo-key"
DATABASE_FILE = "dataforge-demo.db"
WORKER_THREADS = 2
#: kombu warns about a memory:// URL without a host (and then uses "localhost").
MEMORY_BROKER_URL = "memory://localhost/"
MEMORY_POLL_SECONDS = 0.1
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class DemoOptions:
    """What the ``demo`` command line chose; None means the embedded default."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database_url: str | None = None
    redis_url: str | None = None
    api_key: str | None = None
    data_dir: Path | None = None


def demo_settings(options: DemoOptions, *, data_dir: Path | None) -> Settings:
    """Settings from the environment with the demo's services and key on top.

    The API key is ``options.api_key``, else ``DATAFORGE_API_KEYS``, else ``demo-key``.
    """
    redis_url = options.redis_url
    overrides: dict[str, Any] = {
        "database_url": options.database_url or f"sqlite:///{_database_path(data_dir)}",
        "redis_url": redis_url or MEMORY_URL,
        "celery_broker_url": redis_url or MEMORY_BROKER_URL,
        "celery_result_backend": redis_url or "cache+memory://",
        "celery_worker_concurrency": WORKER_THREADS,
        "task_name_prefix": "",  # the demo's task names are fixed
        "log_console_echo": False,  # the narrator shows each line, with time and task
    }
    if options.api_key is not None:
        overrides["api_keys"] = [options.api_key]
    settings = Settings.from_env(**overrides)
    if not settings.api_keys:
        settings = Settings.from_env(**overrides, api_keys=[DEMO_API_KEY])
    return settings


def make_data_dir(options: DemoOptions) -> Path | None:
    """The directory of the SQLite file: ``--data-dir`` (created if missing), else a
    fresh temporary one; None when ``--database-url`` replaces the file."""
    if options.data_dir is not None:
        options.data_dir.mkdir(parents=True, exist_ok=True)
        return options.data_dir.resolve()
    if options.database_url is not None:
        return None
    return Path(tempfile.mkdtemp(prefix="dataforge-demo-"))


def _database_path(data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataForgeError("the demo needs a data directory for its SQLite file")
    return data_dir / DATABASE_FILE


def _namespace_broker_keys(app: Any, key_prefix: str) -> None:
    """Put the broker's and the result backend's Redis keys under ``key_prefix``, so a
    demo on a shared Redis never takes another app's tasks, nor they its own."""
    prefix = {"global_keyprefix": Keys(key_prefix).namespace("demo")}
    for name in ("broker_transport_options", "result_backend_transport_options"):
        app.conf[name] = {**(app.conf.get(name) or {}), **prefix}


def _poll_memory_broker(app: Any) -> None:
    """Have the worker look at the ``memory://`` queue every 0.1 s, not every second (the
    virtual transports' default): a run starts sooner and the worker stops sooner."""
    options = app.conf.get("broker_transport_options") or {}
    app.conf.broker_transport_options = {**options, "polling_interval": MEMORY_POLL_SECONDS}


class _Worker(WorkController):
    """A Celery worker run in a thread of this process, with a ready event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


class Demo:
    """The whole demo; ``start()`` it, ``stop()`` it (from the main thread)."""

    def __init__(self, options: DemoOptions, *, data_dir: Path | None, console: Console) -> None:
        self.options = options
        self.console = console
        self.data_dir = data_dir
        self.settings = demo_settings(options, data_dir=data_dir)
        self.app = Celery("dataforge-demo")
        self.runtime: Runtime = setup(self.app, self.settings, registry=TaskRegistry())
        self.app.conf.update(
            worker_hijack_root_logger=False,
            worker_redirect_stdouts=False,
            worker_enable_remote_control=False,
        )
        if options.redis_url:
            _namespace_broker_keys(self.app, self.settings.key_prefix)
        else:
            _poll_memory_broker(self.app)
        if self.runtime.dispatcher is not None:  # setup() made it; show what goes through it
            self.runtime.dispatcher = NarratingDispatcher(self.runtime.dispatcher, console)
        register_demo_tasks(self.app, self.runtime.registry)
        self.narrator = RunNarrator(self.runtime, console)
        self.server = ApiServer(
            mount_api(create_app(self.runtime, min_key_length=1)),
            host=options.host,
            port=options.port,
        )
        self._scheduler: DatabaseScheduler | None = None
        self._threads: list[threading.Thread] = []
        self._worker: _Worker | None = None
        self._stopping = threading.Event()
        self._uid = f"dataforge.demo.{id(self)}"

    @property
    def api_key(self) -> str:
        return key_values(self.settings.api_keys)[0]

    @property
    def api_url(self) -> str:
        return self.server.base_url + API_PREFIX

    # ------------------------------------------------------------ start

    def prepare(self) -> list[str]:
        """Check the services, create the tables and schedules; the schedules created."""
        health = self.runtime.check()
        for service, state in health.items():
            if not state.startswith("ok"):
                raise BackendUnavailable(f"the demo's {service} is not usable: {state}")
        create_all(self.runtime.engine)
        return ensure_demo_schedules(self.runtime) + ensure_maintenance_schedules(self.runtime)

    def start(self) -> None:
        """Start the API (a port in use fails first), the narrator and the worker; the
        scheduler comes last."""
        self.server.start()
        signals.task_prerun.connect(self._on_prerun, weak=False, dispatch_uid=self._uid)
        self.narrator.start()
        self._start_worker()

    def start_scheduler(self) -> None:
        """Start dispatching (after the banner, so the first dispatch comes below it)."""
        self._scheduler = DatabaseScheduler(self.app, runtime=self.runtime)
        self._spawn("dataforge-demo-beat", self._beat_loop)

    def _start_worker(self) -> None:
        # as Celery's own embedded worker does: the pool's threads have no current app and
        # would fall back to the default one (and its copies of shared tasks) otherwise
        self.app.finalize()
        self.app.set_current()
        self.app.set_default()
        worker = _Worker(
            app=self.app,
            hostname=f"demo@{socket.gethostname()}",
            pool="threads",
            concurrency=WORKER_THREADS,
            loglevel="WARNING",
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self._worker = worker
        self._spawn("dataforge-demo-worker", worker.start)
        if not worker.ready.wait(30):
            raise BackendUnavailable("the demo's Celery worker did not start within 30 s")

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _beat_loop(self) -> None:
        scheduler = self._scheduler
        while scheduler is not None and not self._stopping.is_set():
            try:
                scheduler.tick()  # waits inside, up to the next due run or a change notice
            except Exception:
                logger.exception("the demo scheduler's pass failed; trying again in 1 s")
                self._stopping.wait(1.0)

    def _on_prerun(self, sender: Any = None, **_: Any) -> None:
        if not isinstance(sender, DataForgeTask) or sender.app is not self.app:
            return
        run = current_run()  # bound by the library's own prerun handler, connected earlier
        if run is not None and not run.state.duplicate:
            try:
                self.narrator.follow(
                    run.celery_task_id, run.task_name, execution_id=run.execution_id
                )
            except Exception:
                logger.exception("cannot follow the log of run %s", run.celery_task_id)

    # ------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop every part: ask them all first, then wait for each. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.close()  # only asks: its loop ends within a second
        self.server.stop(wait=False)  # only asks too: both overlap the worker's shutdown
        if self._worker is not None:
            self._worker.stop()  # warm: returns once the runs in progress have ended
        for thread in self._threads:
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():
                logger.warning("%s did not stop within %.0f s", thread.name, _STOP_TIMEOUT)
        self.server.stop()
        self.narrator.stop()
        signals.task_prerun.disconnect(dispatch_uid=self._uid)
        self.runtime.close()

    @property
    def successful_runs(self) -> int:
        return self.narrator.outcomes["success"]
