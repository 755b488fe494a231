"""A synchronous httpx client for an ASGI app, for the sync test suites most hosts have.

``SyncASGITransport`` runs the app on a private event loop in a daemon thread and
hands each request to httpx's own ``ASGITransport`` there, so a plain ``httpx.Client``
calls the app in process: no server, no port. As with ``ASGITransport``, a response is
returned once the app has sent all of it, so a live log stream (``/executions/{id}/logs``)
can be read for a finished run, not followed while a run is still going; for that,
serve the app with uvicorn and use a real connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

__all__ = ["API_ROOT", "SyncASGITransport", "make_client"]

API_ROOT = "/api/v1"
T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="dataforge-test-asgi", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class SyncASGITransport(httpx.BaseTransport):
    """An httpx sync transport that calls ``app`` on a private event loop."""

    def __init__(self, app: Any, *, root_path: str = "") -> None:
        self._inner = httpx.ASGITransport(app=app, root_path=root_path)
        self._loop = _LoopThread()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        timeout = (request.extensions.get("timeout") or {}).get("read")

        async def call() -> tuple[int, httpx.Headers, bytes]:
            inner_request = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self._inner.handle_async_request(inner_request)
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
            return response.status_code, response.headers, raw

        try:
            status, headers, raw = self._loop.run(call(), timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise httpx.ReadTimeout(
                f"the app did not finish answering {request.method} {request.url} in "
                f"{timeout} s (a live stream never ends in process: serve it with uvicorn)",
                request=request,
            ) from None
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(raw))

    def close(self) -> None:
        self._loop.close()


def make_client(
    app: Any,
    *,
    api_key: str | None = None,
    root_path: str = API_ROOT,
    timeout: float = 30.0,
) -> httpx.Client:
    """An ``httpx.Client`` on ``app`` mounted at ``root_path``; paths are relative to it
    (``client.get("/tasks")``). ``api_key`` is sent as ``X-API-Key`` on every request."""
    headers = {"X-API-Key": api_key} if api_key else {}
    return httpx.Client(
        transport=SyncASGITransport(app, root_path=root_path),
        base_url=f"http://dataforge.test{root_path}",
        headers=headers,
        timeout=timeout,
    )
