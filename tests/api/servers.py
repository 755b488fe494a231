"""Serve an ASGI app with a real uvicorn on a loopback port, in a background thread.

``serve(app)`` starts uvicorn on ``127.0.0.1`` with port 0 (the OS picks a free one),
waits until it listens and yields its base URL; on exit it asks the server to stop and
joins the thread. ``host_app(kind, api)`` mounts the API under ``/api/v1`` inside a
FastAPI or a Starlette application, as a host would. ``sse_events`` reads Server-Sent
Events from a streaming httpx response.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from tests.api.helpers import PREFIX

START_TIMEOUT = 10.0


@contextmanager
def serve(app: Any, *, access_log: bool = False) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port; yields ``http://127.0.0.1:<port>``."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=2,
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def host_app(kind: str, api: Any) -> Any:
    """``api`` mounted at ``/api/v1`` in a FastAPI or a Starlette host application, or
    by the library's own ``mount_api``."""
    if kind == "fastapi":
        from fastapi import FastAPI

        host = FastAPI()

        @host.get("/")
        def index() -> dict[str, str]:
            return {"host": "fastapi"}

        host.mount(PREFIX, api)
        return host
    if kind == "starlette":
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Mount, Route

        async def index(request: Any) -> JSONResponse:
            return JSONResponse({"host": "starlette"})

        return Starlette(routes=[Route("/", index), Mount(PREFIX, app=api)])
    if kind == "mount_api":
        from dataforge_scheduler.serve import mount_api

        return mount_api(api, PREFIX)
    raise ValueError(kind)


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


def sse_events(response: httpx.Response) -> Iterator[Event | str]:
    """Events of a streaming SSE response; comment lines come through as ``str``."""
    fields: dict[str, list[str]] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield line
            continue
        if line == "":
            if "event" in fields or "data" in fields:
                yield Event(
                    event=fields.get("event", ["message"])[-1],
                    data="\n".join(fields.get("data", [])),
                    id=fields.get("id", [None])[-1],
                )
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))
