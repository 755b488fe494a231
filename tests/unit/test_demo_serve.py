"""Serving the API: the /api/v1 mount, the server's own socket, stop signals, the `api`
command's options and its errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

import pytest

from dataforge_scheduler.errors import ConfigurationError, DataForgeError
from dataforge_scheduler.serve import (
    ApiServer,
    StopSignals,
    add_parser,
    cmd_api,
    is_loopback,
    mount_api,
    require_uvicorn,
)


class Recorder:
    """An ASGI app that records the scopes it gets and answers 204."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


def call(app: Any, path: str, *, root_path: str = "") -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if body else None


def test_api_paths_go_to_the_api_with_the_prefix_as_root_path() -> None:
    api = Recorder()
    app = mount_api(api)
    assert call(app, "/api/v1/tasks")[0] == 204
    assert call(app, "/api/v1")[0] == 204
    assert call(app, "/outer/api/v1/health", root_path="/outer")[0] == 404
    assert [(s["path"], s["root_path"]) for s in api.scopes] == [
        ("/api/v1/tasks", "/api/v1"),
        ("/api/v1", "/api/v1"),
    ]


def test_other_paths_get_an_index_or_a_404_pointing_at_the_api() -> None:
    api = Recorder()
    app = mount_api(api)
    assert call(app, "/") == (
        200,
        {"api": "/api/v1", "openapi": "/api/v1/openapi.json", "health": "/api/v1/health"},
    )
    status, body = call(app, "/api/v10/tasks")
    assert status == 404
    assert "/api/v1/" in body["detail"]
    assert api.scopes == []


def test_lifespan_reaches_the_api() -> None:
    api = Recorder()

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        return None

    asyncio.run(mount_api(api)({"type": "lifespan"}, receive, send))
    assert [s["type"] for s in api.scopes] == ["lifespan"]


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = ApiServer(Recorder(), host="127.0.0.1", port=port)
        with pytest.raises(DataForgeError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            server.start()


def test_the_server_serves_on_the_port_it_bound_and_stops() -> None:
    import httpx

    server = ApiServer(mount_api(Recorder()), host="127.0.0.1", port=0)
    url = server.start()
    try:
        assert server.port != 0
        assert url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(url + "/api/v1/x", timeout=5).status_code == 204
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/", timeout=1)
    server.stop()  # twice is fine


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_asks_for_a_stop_and_handlers_come_back(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with StopSignals() as stop:
        os.kill(os.getpid(), sig)  # delivered to the main thread before kill returns
        assert stop.wait(5) == sig.name
    assert signal.getsignal(sig) is before


def test_without_a_signal_wait_reports_timeout_or_stopped() -> None:
    with StopSignals() as stop:
        assert stop.wait(0) == "timeout"
        threading.Timer(0, stop.event.set).start()
        assert stop.wait(5) == "stopped"


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.4"]))


def test_missing_uvicorn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ConfigurationError, match=r'pip install "dataforge-scheduler\[demo\]"'):
        require_uvicorn()


def api_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["api", *argv])


def test_api_options() -> None:
    args = api_args("-A", "myapp.celery_app:app", "--port", "9001", "--host", "::1")
    assert (args.app, args.port, args.host) == ("myapp.celery_app:app", 9001, "::1")
    assert (api_args().port, api_args().host) == (8847, "127.0.0.1")


def test_api_with_app_refuses_service_urls() -> None:
    args = api_args("-A", "myapp:app", "--database-url", "sqlite://")
    with pytest.raises(ConfigurationError, match="do not apply with -A"):
        cmd_api(args)


def test_api_with_an_unknown_app_says_so() -> None:
    with pytest.raises(ConfigurationError, match="no Celery app found for -A 'no_such_module_x'"):
        cmd_api(api_args("-A", "no_such_module_x"))
