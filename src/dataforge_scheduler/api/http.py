"""The ASGI plumbing: ``Request`` (path relative to the mount point, headers, query,
a capped body, JSON) and ``Response`` (sends itself).

Paths are served relative to where the app is mounted: the route path is ``path`` minus
``root_path`` when ``path`` starts with it (as Starlette and uvicorn ``--root-path`` lay
the scope out), else ``path`` as given. The body is read with its size cap enforced
while streaming (a ``Content-Length`` over the cap is refused before reading anything),
and JSON bodies must say ``application/json``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel

from dataforge_scheduler.api.errors import HTTPError, error_item, validation_failed

__all__ = [
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "json_response",
    "route_path",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MAX_JSON_DEPTH = 64


def route_path(scope: Scope) -> str:
    """The request path relative to the mount point (``root_path``)."""
    path: str = scope.get("path", "") or "/"
    root: str = scope.get("root_path", "") or ""
    if not root or not path.startswith(root):
        return path
    rest = path[len(root) :]
    if not rest:
        return "/"
    return rest if rest.startswith("/") else path


class Request:
    """One HTTP request as the handlers see it."""

    def __init__(self, scope: Scope, receive: Receive, *, max_body_bytes: int) -> None:
        self.scope = scope
        self._receive = receive
        self._max_body_bytes = max_body_bytes
        self.method: str = scope.get("method", "GET").upper()
        self.path = route_path(scope)
        self.root_path: str = scope.get("root_path", "") or ""
        self.headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            # repeated headers join with commas (RFC 9110 §5.3), except the ones we key on
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        self.query: dict[str, str] = {}
        query_string = scope.get("query_string", b"").decode("latin-1")
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            self.query.setdefault(key, value)  # the first of repeated parameters wins
        self.path_params: dict[str, str] = {}
        self.request_id: str = ""
        self._body: bytes | None = None

    async def receive(self) -> Message:
        return await self._receive()

    async def body(self) -> bytes:
        """The whole body; 413 as soon as it is known to exceed the cap."""
        if self._body is not None:
            return self._body
        limit = self._max_body_bytes
        declared = self.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise HTTPError(400, "Content-Length must be a whole number of bytes")
            if int(declared) > limit:
                raise HTTPError(413, f"request body exceeds the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        self._body = b"".join(chunks)
        return self._body

    async def json(self, *, required: bool) -> Any:
        """The parsed JSON body; ``None`` when it is empty and not ``required``.

        415 for a body that is not ``application/json``; 422 for malformed JSON, NaN or
        infinities, or text PostgreSQL cannot store (NUL, unpaired surrogates).
        """
        body = await self.body()
        if not body.strip():
            if required:
                raise validation_failed([error_item(["body"], "Field required", "missing")])
            return None
        media = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            raise HTTPError(415, f"the body must be application/json, got {media or 'nothing'!r}")
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        except UnicodeDecodeError as exc:
            raise validation_failed(
                [error_item(["body"], f"body is not valid UTF-8: {exc.reason}", "json_invalid")]
            ) from None
        except json.JSONDecodeError as exc:
            raise validation_failed(
                [error_item(["body", exc.pos], f"JSON decode error: {exc.msg}", "json_invalid")]
            ) from None
        except (ValueError, RecursionError) as exc:
            raise validation_failed(
                [error_item(["body"], f"JSON decode error: {exc}", "json_invalid")]
            ) from None
        _check_storable(data, ["body"], depth=0)
        return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_storable(value: Any, loc: list[str | int], *, depth: int) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise validation_failed([error_item(loc, "JSON is nested too deeply", "json_invalid")])
    if isinstance(value, str):
        _check_text(value, loc)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, [*loc, key])
            _check_storable(item, [*loc, key], depth=depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, [*loc, index], depth=depth + 1)


def _check_text(text: str, loc: list[str | int]) -> None:
    if "\x00" in text:
        raise validation_failed([error_item(loc, "text must not contain NUL characters")])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise validation_failed(
            [error_item(loc, "text must not contain unpaired surrogates")]
        ) from None


class Response:
    """A complete response that sends itself."""

    def __init__(
        self,
        body: bytes = b"",
        *,
        status: int = 200,
        media_type: str | None = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.body = body
        self.status = status
        self.media_type = media_type
        self.headers = list(headers)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers
        ]
        if self.media_type is not None and self.status not in (204, 304):
            raw.append((b"content-type", self.media_type.encode("latin-1")))
        if self.status not in (204, 304):
            raw.append((b"content-length", str(len(self.body)).encode("latin-1")))
        return raw

    async def __call__(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers()}
        )
        body = b"" if self.status in (204, 304) else self.body
        await send({"type": "http.response.body", "body": body})


def json_response(
    payload: BaseModel | Any, *, status: int = 200, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    """``payload`` (a pydantic model, or JSON-ready data) as an ``application/json`` answer."""
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json().encode("utf-8")
    else:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status=status, headers=headers)
