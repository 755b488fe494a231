"""Serving the API with uvicorn: the ``api`` command, and the server the demo shares.

``mount_api(api)`` puts the ASGI sub-app under ``/api/v1`` without a web framework (the
prefix becomes the scope's ``root_path``, as Starlette's ``Mount`` lays it out; ``/``
answers a small index, anything else 404). ``ApiServer`` runs uvicorn in a background
thread on a socket it binds itself, so a port in use is a clear error before anything
starts, the port may be 0 (tests), and the main thread keeps the signal handling:
``StopSignals`` turns SIGINT and SIGTERM into a clean stop (exit 0), and a second
signal into an immediate exit. ``dataforge-scheduler api`` serves the API standalone:
with ``-A module:app`` (Celery's own ``-A`` lookup) the host's ``setup()`` provides the
runtime and the dispatcher for "run now"; without it, the settings from the environment
do. uvicorn comes with the ``demo`` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.errors import ConfigurationError, DataForgeError
from dataforge_scheduler.settings import Settings, mask_url

if TYPE_CHECKING:
    from dataforge_scheduler.runtime import Runtime

__all__ = [
    "API_PREFIX",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ApiServer",
    "StopSignals",
    "add_parser",
    "cmd_api",
    "configure_logging",
    "mount_api",
    "require_uvicorn",
]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8847
INSTALL_HINT = 'pip install "dataforge-scheduler[demo]"'
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

ASGIApp = Callable[[dict[str, Any], Any, Any], Any]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    return host in _LOOPBACK or host.startswith("127.")


def configure_logging() -> None:
    """Warnings and errors of every library to stderr, one line each (unless the host
    configured logging already); the commands' own output goes to stdout."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def require_uvicorn() -> None:
    """Raise ``ConfigurationError`` with the install command when uvicorn is missing."""
    try:
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"serving the API needs uvicorn, which is not installed: {INSTALL_HINT}",
            field="uvicorn",
        ) from exc


# ---------------------------------------------------------------- mounting


def mount_api(api: ASGIApp, prefix: str = API_PREFIX) -> ASGIApp:
    """``api`` served under ``prefix``; ``/`` answers an index, other paths 404.

    The API gets a copy of the scope (its ``root_path`` extended); a query-string API
    key is then masked in the server's own scope, which is the one the server logs."""
    from dataforge_scheduler.api.auth import redact_query_string

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await api(scope, receive, send)
            return
        child = {**scope, "root_path": (scope.get("root_path", "") or "") + prefix}
        if "query_string" in scope:  # the API reads the key from its copy
            scope["query_string"] = redact_query_string(scope["query_string"])
        path: str = scope.get("path", "")
        if path == prefix or path.startswith(prefix + "/"):
            await api(child, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        if path == "/":
            body = {
                "api": prefix,
                "openapi": f"{prefix}/openapi.json",
                "health": f"{prefix}/health",
            }
            await _send_json(send, 200, body)
        else:
            await _send_json(send, 404, {"detail": f"not found: the API is under {prefix}/"})

    return app


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# ---------------------------------------------------------------- the server


class ApiServer:
    """uvicorn serving one ASGI app from a background thread, on a socket bound here."""

    def __init__(self, app: ASGIApp, *, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, *, timeout: float = 10.0) -> str:
        """Bind, start serving and wait until uvicorn is up; returns the base URL."""
        require_uvicorn()
        import uvicorn

        sock = self._bind()
        config = uvicorn.Config(
            self.app,
            log_config=None,  # our logging setup stays; uvicorn's loggers propagate to it
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="dataforge-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise DataForgeError(f"the API server did not start on {self.base_url}")
            time.sleep(0.02)
        return self.base_url

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host, self.port), family=family, reuse_port=False)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise DataForgeError(
                f"cannot listen on {self.host}:{self.port} ({reason}); is "
                "another server using that port? Pass --port to pick another",
                host=self.host,
                port=self.port,
            ) from exc
        self.port = int(sock.getsockname()[1])
        return sock

    def stop(self, *, wait: bool = True, timeout: float = 5.0) -> None:
        """Ask uvicorn to finish and (``wait``) join its thread; safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if wait and self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("the API server did not stop within %.0f s", timeout)


class StopSignals:
    """SIGINT and SIGTERM, caught in the main thread, as a stop request.

    Inside ``with StopSignals() as signals:`` the first signal sets ``event`` (so
    ``wait`` returns and the caller shuts down in order, exit 0); a second one exits at
    once with code 130, so a stuck shutdown can always be cut short. The previous
    handlers come back on exit. Must be entered in the main thread.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            os.write(2, b"\nsecond signal: exiting now\n")
            os._exit(130)
        self.received = signal.Signals(signum).name
        self.event.set()

    def wait(self, timeout: float | None = None) -> str:
        """Block until a signal, ``event.set()`` or ``timeout`` s; say which it was."""
        finished = self.event.wait(timeout)
        if self.received is not None:
            return self.received
        return "stopped" if finished else "timeout"


# ---------------------------------------------------------------- the api command


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``api`` to the ``dataforge-scheduler`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "api",
        help="serve the REST API standalone under /api/v1 (uvicorn)",
        description=(
            "Serve the REST API with uvicorn under /api/v1. Settings come from the "
            "environment (DATAFORGE_*; API keys from DATAFORGE_API_KEYS). With -A the host's "
            "Celery app, on which dataforge_scheduler.setup() was called, provides the "
            "runtime, the registered tasks and the dispatcher for 'run now'. Needs uvicorn: "
            f"{INSTALL_HINT}."
        ),
    )
    parser.add_argument(
        "-A", "--app", help="the host's Celery app, as for `celery -A` (module or module:attr)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"bind address ({DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: DATAFORGE_DATABASE_URL)")
    parser.add_argument("--redis-url", help="Redis URL (default: DATAFORGE_REDIS_URL)")
    parser.set_defaults(handler=cmd_api)
    return parser


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API until SIGINT or SIGTERM; 0 on a clean stop."""
    require_uvicorn()
    configure_logging()
    from dataforge_scheduler.api import create_app

    runtime = _api_runtime(args)
    try:
        server = ApiServer(mount_api(create_app(runtime)), host=args.host, port=args.port)
        with StopSignals() as signals:
            url = server.start()
            try:
                _print(f"dataforge-scheduler API on {url}{API_PREFIX}  (Ctrl-C stops it)")
                _print(f"  database  {mask_url(runtime.settings.database_url)}")
                _print(f"  redis     {mask_url(runtime.settings.effective_redis_url)}")
                _print(f"  openapi   {url}{API_PREFIX}/openapi.json")
                signals.wait()
            finally:
                server.stop()
    finally:
        runtime.close()
    _print("API stopped")
    return 0


def _api_runtime(args: argparse.Namespace) -> Runtime:
    from celery import Celery

    from dataforge_scheduler.runtime import runtime_for
    from dataforge_scheduler.wiring import setup

    if args.app:
        if args.database_url or args.redis_url:
            raise ConfigurationError(
                "--database-url and --redis-url do not apply with -A: the app's "
                "setup() settings do",
                field="app",
            )
        app = _find_app(args.app)
        app.loader.import_default_modules()  # registers the host's tasks, as a worker does
        return runtime_for(app)
    overrides = {
        name: value
        for name, value in (("database_url", args.database_url), ("redis_url", args.redis_url))
        if value
    }
    settings = Settings.from_env(**overrides)
    runtime = setup(Celery("dataforge-api"), settings)
    _print(
        "note: without -A only the library's own tasks are registered, so the API refuses "
        "to create or run schedules of other tasks; pass -A module:app to serve yours"
    )
    return runtime


def _find_app(spec: str) -> Any:
    from celery.app.utils import find_app

    try:
        return find_app(spec)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"no Celery app found for -A {spec!r}: {exc}", field="app", value=spec
        ) from exc


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
