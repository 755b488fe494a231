"""What a handler gets: the app's shared state and the request it is answering.

``ApiState`` is built once per app (runtime, limits, the live-log feed, the SSE stream
count); ``Context`` adds the request, its caller and path parameters. Blocking work (the
database, the sync Redis roles) goes through ``Context.offload``, which runs it in a
worker thread (``asyncio.to_thread``) so a slow query never stalls other requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from dataforge_scheduler.api.errors import HTTPError, error_item, from_validation_error
from dataforge_scheduler.errors import DataForgeError

if TYPE_CHECKING:
    from dataforge_scheduler.api.auth import Principal
    from dataforge_scheduler.api.health import HealthProbe
    from dataforge_scheduler.api.http import Request
    from dataforge_scheduler.core.ports import AsyncLogFeed
    from dataforge_scheduler.runtime import Runtime
    from dataforge_scheduler.sql.store import Session

__all__ = ["ApiState", "Context"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass
class ApiState:
    """Per-app state shared by every request."""

    runtime: Runtime
    max_body_bytes: int
    sse_max_streams: int
    heartbeat_seconds: float
    health: HealthProbe
    sse_max_streams_per_key: int = 10
    sse_max_stream_seconds: float = 3600.0
    sse_write_timeout_seconds: float = 30.0
    sse_streams: int = 0
    sse_by_principal: dict[str, int] = field(default_factory=dict)

    def take_stream(self, principal: str) -> None:
        """Count a live-log stream of ``principal``; 503 past the total, 429 past the
        principal's own limit (one caller never takes every slot)."""
        if self.sse_streams >= self.sse_max_streams:
            raise HTTPError(
                503,
                f"too many live log streams ({self.sse_max_streams}); try again later",
                headers=[("retry-after", "5")],
            )
        held = self.sse_by_principal.get(principal, 0)
        if held >= self.sse_max_streams_per_key:
            raise HTTPError(
                429,
                f"this caller holds {held} live log streams, the most one caller may "
                f"({self.sse_max_streams_per_key}); close one first",
                headers=[("retry-after", "5")],
            )
        self.sse_streams += 1
        self.sse_by_principal[principal] = held + 1

    def give_stream(self, principal: str) -> None:
        """The stream of ``principal`` ended: free its slot."""
        self.sse_streams -= 1
        left = self.sse_by_principal.get(principal, 1) - 1
        if left > 0:
            self.sse_by_principal[principal] = left
        else:
            self.sse_by_principal.pop(principal, None)

    @property
    def log_feed(self) -> AsyncLogFeed:
        """The async live-log feed of the runtime's backend."""
        return self.runtime.log_feed


@dataclass
class Context:
    """One request being answered."""

    state: ApiState
    request: Request
    principal: Principal | None
    path: dict[str, Any]

    @property
    def runtime(self) -> Runtime:
        return self.state.runtime

    @property
    def principal_name(self) -> str:
        return self.principal.name if self.principal is not None else "anonymous"

    def now(self) -> datetime:
        return self.runtime.clock.now()

    async def offload(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking ``function(*args)`` in a worker thread."""
        return await asyncio.to_thread(function, *args)

    async def in_session(self, function: Callable[[Session], T]) -> T:
        """Run ``function(session)`` in one transaction, in a worker thread."""

        def run() -> T:
            with self.runtime.session() as session:
                return function(session)

        return await asyncio.to_thread(run)

    def query(self, model: type[M]) -> M:
        """The query string validated by ``model`` (422 at ``["query", ...]``)."""
        for name, value in self.request.query.items():
            if "\x00" in value:
                raise HTTPError(
                    422, [error_item(["query", name], "text must not contain NUL characters")]
                )
        try:
            return model.model_validate(self.request.query)
        except ValidationError as exc:
            raise from_validation_error(exc, location="query") from None

    async def body(self, model: type[M]) -> M:
        """The JSON body validated by ``model`` (422 at ``["body", ...]``; required)."""
        return self._validate_body(model, await self.request.json(required=True))

    async def optional_body(self, model: type[M]) -> M | None:
        """Like ``body``, but an empty body is ``None``."""
        data = await self.request.json(required=False)
        return None if data is None else self._validate_body(model, data)

    @staticmethod
    def _validate_body(model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, location="body") from None

    async def notify(self, schedule_id: int | None) -> None:
        """Wake the beat schedulers after a committed change; a failure only delays it."""
        try:
            await asyncio.to_thread(self.runtime.notices.publish, schedule_id)
        except DataForgeError as exc:
            logger.warning("could not publish the change of schedule %s: %s", schedule_id, exc)
