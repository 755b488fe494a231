"""``create_app``: the REST API as a plain ASGI 3 application, and its route table.

The app needs no web framework: any ASGI server serves it and any ASGI host mounts it
(``app.mount("/api/v1", create_app(runtime, api_keys=[...]))`` in FastAPI or Starlette).
Paths are relative to the mount point. Each request is matched (404/405), authenticated
(401; read-only keys get 403 on writes), then handled; library errors become their HTTP
answers in one place, and anything unexpected is logged and answered 500 without
details. Query-string API keys are masked in the scope before a server logs it.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from dataforge_scheduler.api.auth import (
    Authenticator,
    AuthHook,
    Keys,
    Principal,
    redact_query_string,
)
from dataforge_scheduler.api.context import ApiState, Context
from dataforge_scheduler.api.errors import HTTPError, to_http_error
from dataforge_scheduler.api.handlers import backfill, locks, misc, runs, tasks
from dataforge_scheduler.api.health import (
    DEFAULT_CACHE_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    HealthProbe,
)
from dataforge_scheduler.api.http import Receive, Request, Response, Scope, Send, json_response
from dataforge_scheduler.api.openapi import build_openapi
from dataforge_scheduler.api.routing import Access, Operation, Router, convert
from dataforge_scheduler.api.schemas.misc import (
    AuditPage,
    AuditQuery,
    Health,
    PreviewRequest,
    PreviewResponse,
    RegisteredTasks,
)
from dataforge_scheduler.api.schemas.runs import (
    AllExecutionsQuery,
    BackfillCancelled,
    BackfillCancelRequest,
    BackfillRequest,
    BackfillResult,
    CancelRequest,
    CancelResult,
    ExecutionDetail,
    ExecutionPage,
    ListExecutionsQuery,
    LockList,
    LockState,
    LogStreamQuery,
    ReleaseResult,
    RerunRequest,
    RunAccepted,
    RunRequest,
)
from dataforge_scheduler.api.schemas.tasks import (
    ListTasksQuery,
    PauseRequest,
    TaskCreate,
    TaskDetail,
    TaskOut,
    TaskPage,
    TaskUpdate,
)
from dataforge_scheduler.api.sse import EventStream, stream_logs
from dataforge_scheduler.errors import ConfigurationError, DataForgeError

if TYPE_CHECKING:
    from dataforge_scheduler.runtime import Runtime

__all__ = ["ApiApp", "build_router", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 15.0
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
R, W = Access.READ, Access.WRITE


def _op(method: str, handler: Any, summary: str, tag: str, **extra: Any) -> Operation:
    return Operation(method=method, handler=handler, summary=summary, tag=tag, **extra)


def build_router() -> Router:
    """The route table (templates relative to the mount point)."""
    router = Router()
    table: list[tuple[str, Operation]] = [
        ("/tasks", _op("GET", tasks.list_tasks, "List schedules", "tasks",
                       query_model=ListTasksQuery, response_model=TaskPage)),
        ("/tasks", _op("POST", tasks.create_task, "Create a schedule", "tasks", access=W,
                       status=201, body_model=TaskCreate, response_model=TaskOut, errors=(409,))),
        ("/tasks/registered", _op("GET", misc.registered_tasks, "Registered tasks (seed shape)",
                                  "registry", response_model=RegisteredTasks)),
        ("/tasks/locks", _op("GET", locks.list_locks, "Every held lock", "locks",
                             response_model=LockList)),
        ("/tasks/{id}", _op("GET", tasks.get_task, "One schedule in detail", "tasks",
                            response_model=TaskDetail)),
        ("/tasks/{id}", _op("PUT", tasks.update_task, "Update a schedule", "tasks", access=W,
                            body_model=TaskUpdate, response_model=TaskOut, errors=(409,))),
        ("/tasks/{id}", _op("PATCH", _patch, "Update a schedule (partial)", "tasks", access=W,
                            body_model=TaskUpdate, response_model=TaskOut, errors=(409,))),
        ("/tasks/{id}", _op("DELETE", tasks.delete_task, "Delete a schedule", "tasks", access=W,
                            status=204, errors=(403,))),
        ("/tasks/{id}/run", _op("POST", runs.run_task, "Run now", "runs", access=W, status=202,
                                body_model=RunRequest, body_required=False,
                                response_model=RunAccepted, errors=(409,))),
        ("/tasks/{id}/backfill", _op("POST", backfill.backfill_task, "Backfill past slots",
                                     "runs", access=W, body_model=BackfillRequest,
                                     response_model=BackfillResult, errors=(409,))),
        ("/tasks/{id}/backfill/cancel", _op("POST", backfill.cancel_task_backfill,
                                            "Cancel a backfill's waiting slots", "runs",
                                            access=W, body_model=BackfillCancelRequest,
                                            body_required=False,
                                            response_model=BackfillCancelled)),
        ("/tasks/{id}/pause", _op("POST", runs.pause_task, "Pause (idempotent)", "tasks",
                                  access=W, body_model=PauseRequest, body_required=False,
                                  response_model=TaskOut)),
        ("/tasks/{id}/resume", _op("POST", runs.resume_task, "Resume (idempotent)", "tasks",
                                   access=W, response_model=TaskOut, errors=(409,))),
        ("/tasks/{id}/executions", _op("GET", runs.list_task_executions, "Run history", "runs",
                                       query_model=ListExecutionsQuery,
                                       response_model=ExecutionPage)),
        ("/tasks/{id}/lock", _op("GET", locks.get_lock, "A schedule's lock", "locks",
                                 response_model=LockState)),
        ("/tasks/{id}/release-lock", _op("POST", locks.release_lock, "Force-release a lock",
                                         "locks", access=W, response_model=ReleaseResult)),
        ("/executions", _op("GET", runs.list_executions, "Every run, filtered", "runs",
                            query_model=AllExecutionsQuery, response_model=ExecutionPage)),
        ("/executions/{id}", _op("GET", runs.get_execution, "One run with its log", "runs",
                                 response_model=ExecutionDetail)),
        ("/executions/{id}/cancel", _op("POST", runs.cancel_execution, "Cancel a run", "runs",
                                        access=W, body_model=CancelRequest, body_required=False,
                                        response_model=CancelResult, errors=(409,))),
        ("/executions/{id}/rerun", _op("POST", runs.rerun_execution, "Run a run again", "runs",
                                       access=W, status=202, body_model=RerunRequest,
                                       body_required=False, response_model=RunAccepted,
                                       errors=(409,))),
        ("/executions/{id}/logs", _op("GET", stream_logs, "Live log (SSE)", "runs",
                                      media_type="text/event-stream",
                                      query_model=LogStreamQuery, errors=(429,))),
        ("/schedules/preview", _op("POST", misc.preview_schedule, "Preview fire times",
                                   "schedules", body_model=PreviewRequest,
                                   response_model=PreviewResponse)),
        ("/audit", _op("GET", misc.list_audit_entries, "The audit trail", "audit",
                       query_model=AuditQuery, response_model=AuditPage)),
        ("/health", _op("GET", misc.health, "Database and Redis reachability", "health",
                        access=Access.PUBLIC, response_model=Health,
                        other_responses=((503, Health),))),
        ("/openapi.json", _op("GET", _openapi, "This document", "meta", access=Access.PUBLIC)),
    ]  # fmt: skip
    for template, operation in table:
        router.add(template, operation)
    return router


async def _patch(ctx: Context) -> Response:
    return await tasks.update_task(ctx)


async def _openapi(ctx: Context) -> Response:
    app: ApiApp = ctx.request.scope["dataforge.api"]
    return json_response(app.openapi(ctx.request.root_path))


class ApiApp:
    """The ASGI application ``create_app`` returns."""

    def __init__(self, state: ApiState, router: Router, auth: Authenticator, *, title: str) -> None:
        self.state = state
        self.router = router
        self.auth = auth
        self.title = title
        self._openapi: dict[str, dict[str, Any]] = {}

    @property
    def runtime(self) -> Runtime:
        return self.state.runtime

    def openapi(self, root_path: str = "") -> dict[str, Any]:
        """The OpenAPI 3.1 document as served under ``root_path`` (cached per mount)."""
        if root_path not in self._openapi:
            self._openapi[root_path] = build_openapi(
                self.router, title=self.title, version=_version(), root_path=root_path
            )
        return self._openapi[root_path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, max_body_bytes=self.state.max_body_bytes)
        scope["query_string"] = redact_query_string(scope.get("query_string", b""))
        scope["dataforge.api"] = self
        given = request.headers.get("x-request-id", "")
        request.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        response = await self._respond(request)
        if isinstance(response, Response):
            response.headers.append(("x-request-id", request.request_id))
        await response(send)

    async def _respond(self, request: Request) -> Response | EventStream:
        try:
            operation, raw = self.router.match(request.path, request.method)
            principal: Principal | None = None
            if operation.access != Access.PUBLIC:
                principal = await self.auth.authenticate(request)
                if operation.access == Access.WRITE and principal.read_only:
                    raise HTTPError(403, "this API key is read-only: it may only GET")
            ctx = Context(self.state, request, principal, convert(raw))
            result: Response | EventStream = await operation.handler(ctx)
            return result
        except HTTPError as exc:
            return _error(exc)
        except DataForgeError as exc:
            error = to_http_error(exc)
            if error.status >= 500:
                logger.warning(
                    "%s %s answered %d: %s", request.method, request.path, error.status, exc
                )
            return _error(error)
        except Exception:
            # never echo the exception: it may hold SQL or data; the log has it all
            logger.exception("unhandled error on %s %s", request.method, request.path)
            return _error(HTTPError(500, "Internal Server Error"))


def _version() -> str:
    # read from the distribution, not the package root (which imports the Celery face)
    try:
        return version("dataforge-scheduler")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def _error(exc: HTTPError) -> Response:
    response = json_response(exc.payload(), status=exc.status)
    response.headers.extend(exc.headers)
    return response


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    runtime: Runtime,
    *,
    api_keys: Keys | None = None,
    read_only_keys: Keys | None = None,
    authenticate: AuthHook | None = None,
    allow_anonymous: bool = False,
    anonymous_writes: bool = False,
    min_key_length: int | None = None,
    max_body_bytes: int | None = None,
    sse_max_streams: int | None = None,
    sse_max_streams_per_key: int | None = None,
    sse_max_stream_seconds: float | None = None,
    sse_write_timeout_seconds: float | None = None,
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    health_cache_seconds: float = DEFAULT_CACHE_SECONDS,
    health_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    title: str = "dataforge-scheduler",
) -> ApiApp:
    """The REST API over ``runtime`` as an ASGI 3 application.

    Keys default to ``runtime.settings.api_keys`` / ``api_read_only_keys``; a mapping
    names them (``{"ci-bot": "..."}``: the audit trail says ``key:ci-bot``), a list names
    them by position (``key:1``). A key shorter than ``min_key_length`` (default: the
    ``api_min_key_length`` setting, 16) is refused with ``ConfigurationError``. With no key,
    no ``authenticate`` hook and not ``allow_anonymous``, ``ConfigurationError`` (an API
    open by accident is worse than one that does not start). An anonymous caller
    (``allow_anonymous``) may only read unless ``anonymous_writes`` is also given.
    ``max_body_bytes`` and
    ``sse_max_streams`` (and the other ``sse_*`` limits) default to the settings of the
    same names. ``GET /health``
    checks the backends at most once per ``health_cache_seconds`` (2), one check at a
    time on its own thread, and answers ``timeout`` past ``health_timeout_seconds`` (3).
    """
    settings = runtime.settings
    limits = {
        "max_body_bytes": settings.api_max_body_bytes if max_body_bytes is None else max_body_bytes,
        "sse_max_streams": settings.sse_max_streams if sse_max_streams is None else sse_max_streams,
        "heartbeat_seconds": heartbeat_seconds,
        "sse_max_streams_per_key": settings.sse_max_streams_per_key
        if sse_max_streams_per_key is None
        else sse_max_streams_per_key,
        "sse_max_stream_seconds": settings.sse_max_stream_seconds
        if sse_max_stream_seconds is None
        else sse_max_stream_seconds,
        "sse_write_timeout_seconds": settings.sse_write_timeout_seconds
        if sse_write_timeout_seconds is None
        else sse_write_timeout_seconds,
    }
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigurationError(f"{name} must be greater than 0, got {value!r}", field=name)
    auth = Authenticator(
        keys=settings.api_keys if api_keys is None else api_keys,
        read_only_keys=settings.api_read_only_keys if read_only_keys is None else read_only_keys,
        hook=authenticate,
        allow_anonymous=allow_anonymous,
        anonymous_writes=anonymous_writes,
        min_key_length=settings.api_min_key_length if min_key_length is None else min_key_length,
    )
    if health_cache_seconds < 0 or health_timeout_seconds <= 0:
        raise ConfigurationError(
            "health_cache_seconds must be 0 or more and health_timeout_seconds more than 0",
            field="health_timeout_seconds",
        )
    state = ApiState(
        runtime=runtime,
        max_body_bytes=int(limits["max_body_bytes"]),
        sse_max_streams=int(limits["sse_max_streams"]),
        heartbeat_seconds=float(heartbeat_seconds),
        sse_max_streams_per_key=int(limits["sse_max_streams_per_key"]),
        sse_max_stream_seconds=float(limits["sse_max_stream_seconds"]),
        sse_write_timeout_seconds=float(limits["sse_write_timeout_seconds"]),
        health=HealthProbe(
            functools.partial(misc.check_backends, runtime),
            cache_seconds=health_cache_seconds,
            timeout_seconds=health_timeout_seconds,
        ),
    )
    return ApiApp(state, build_router(), auth, title=title)
