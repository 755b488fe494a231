"""HTTP errors and their one translation from library and pydantic exceptions.

Every error the API answers has FastAPI's familiar shape: ``{"detail": "..."}`` or, for
validation, ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``. ``HTTPError``
carries a status, that detail and extra headers; ``to_http_error`` maps the
``DataForgeError`` tree (invalid input 422, not found 404, conflict 409, backend down
503, a misconfigured server or a refused statement 500) so handlers raise library errors
and never build responses for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from dataforge_scheduler.errors import (
    BackendUnavailable,
    ConfigurationError,
    ConflictError,
    DatabaseError,
    DataForgeError,
    InvalidParams,
    InvalidSchedule,
    NotFound,
    UnknownTask,
)

__all__ = [
    "HTTPError",
    "error_item",
    "from_validation_error",
    "to_http_error",
    "validation_failed",
]

_LOCATIONS = frozenset({"body", "query", "path", "header"})

logger = logging.getLogger(__name__)


class HTTPError(Exception):
    """An error answer: ``status``, ``detail`` (text or a list of error items), headers."""

    def __init__(
        self,
        status: int,
        detail: str | list[dict[str, Any]],
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(detail if isinstance(detail, str) else f"{status} validation error")
        self.status = status
        self.detail = detail
        self.headers = list(headers)

    def payload(self) -> dict[str, Any]:
        return {"detail": self.detail}


def error_item(loc: Iterable[str | int], msg: str, kind: str = "value_error") -> dict[str, Any]:
    """One validation error item: ``{"loc": [...], "msg": ..., "type": ...}``."""
    return {"loc": list(loc), "msg": msg, "type": kind}


def validation_failed(items: list[dict[str, Any]]) -> HTTPError:
    """A 422 listing ``items``."""
    return HTTPError(422, items)


def from_validation_error(exc: ValidationError, *, location: str) -> HTTPError:
    """A pydantic ``ValidationError`` as a 422, each ``loc`` prefixed with ``location``."""
    items = []
    for raw in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [location, *(part if isinstance(part, int) else str(part) for part in raw["loc"])]
        items.append(error_item(loc, raw["msg"], raw["type"]))
    return validation_failed(items)


def _located(loc: Sequence[Any], *, location: str) -> list[str | int]:
    parts = [part if isinstance(part, int) else str(part) for part in loc]
    if parts and parts[0] in _LOCATIONS:
        return parts
    return [location, *parts]


_UNAVAILABLE = {
    "database": "the database is unavailable",
    "redis": "Redis is unavailable",
    "broker": "the broker is unavailable",
}


def unavailable(exc: BackendUnavailable) -> str:
    """What a 503 says of ``exc``: which backend, in a stable phrase. The driver's own
    words (hosts, ports, users, channel names) go to the log, at WARNING."""
    logger.warning("answering 503: %s", exc.message)
    return _UNAVAILABLE.get(str(exc.details.get("backend")), "a backend is unavailable")


def to_http_error(exc: DataForgeError, *, location: str = "body") -> HTTPError:
    """The HTTP answer for a library error; ``location`` prefixes field-level errors."""
    if isinstance(exc, InvalidParams):
        raw_items = getattr(exc, "errors", None) or []
        items = [
            error_item(_located(item.get("loc", ()), location=location), item["msg"], item["type"])
            for item in raw_items
        ]
        if not items:
            items = [error_item(_located([exc.field or ""], location=location), exc.message)]
        return validation_failed(items)
    if isinstance(exc, UnknownTask):
        return validation_failed([error_item([location, "task_name"], exc.message, "unknown_task")])
    if isinstance(exc, InvalidSchedule):
        loc = [location] if not exc.field else [location, exc.field]
        return validation_failed([error_item(loc, exc.message)])
    if isinstance(exc, NotFound):
        return HTTPError(404, exc.message)
    if isinstance(exc, ConflictError):
        return HTTPError(409, exc.message)
    if isinstance(exc, BackendUnavailable):
        return HTTPError(503, unavailable(exc), headers=[("retry-after", "5")])
    if isinstance(exc, ConfigurationError | DatabaseError):
        return HTTPError(500, "Internal Server Error")
    return HTTPError(400, exc.message)
