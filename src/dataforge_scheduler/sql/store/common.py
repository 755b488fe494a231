"""What the store's schedule and execution functions share: pages, dialect inserts,
database error classification and JSON-safe values.

Nothing here runs SQL by itself except ``fetch_page``, which counts and slices a query
the caller built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dataforge_scheduler.errors import ConfigurationError, InvalidParams

__all__ = [
    "MAX_PAGE_SIZE",
    "Page",
    "aware_now",
    "capped_json",
    "clean_text",
    "dialect_insert",
    "fetch_page",
    "invalid_param",
    "is_unique_violation",
    "json_safe",
]

T = TypeVar("T")

MAX_PAGE_SIZE = 200
_MAX_JSON_DEPTH = 32
_PG_UNIQUE_VIOLATION = "23505"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``total`` counts every row that matched the filters."""

    items: list[T]
    total: int
    page: int
    page_size: int


def invalid_param(field: str, value: Any, *, message: str) -> InvalidParams:
    """An ``InvalidParams`` for a listing parameter, in the API's error-list shape."""
    return InvalidParams(
        message,
        field=field,
        value=value,
        errors=[{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_param(
            field, value, message=f"{field} must be a whole number >= 1, got {value!r}"
        )
    return value


def fetch_page(
    session: Session,
    query: Select[Any],
    *,
    order_by: list[ColumnElement[Any]],
    page: int,
    page_size: int,
) -> Page[Any]:
    """Count the rows ``query`` matches and return page ``page`` of them, in order.

    ``page`` starts at 1; ``page_size`` is capped at ``MAX_PAGE_SIZE``.
    """
    page = _positive_int("page", page)
    size = min(_positive_int("page_size", page_size), MAX_PAGE_SIZE)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = session.scalars(query.order_by(*order_by).limit(size).offset((page - 1) * size))
    return Page(items=list(rows), total=int(total or 0), page=page, page_size=size)


def dialect_insert(session: Session) -> Callable[..., Any]:
    """The ``insert`` of the session's dialect, the one with ``on_conflict_do_*``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise ConfigurationError(
        f"database dialect {name!r} is not supported (use PostgreSQL or SQLite)",
        field="database_url",
    )


def is_unique_violation(exc: IntegrityError) -> bool:
    """Whether the database refused a row because a unique key was taken."""
    if getattr(exc.orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION:
        return True
    return "UNIQUE constraint failed" in str(exc.orig)


def aware_now(now: datetime) -> datetime:
    """``now`` as aware UTC; a naive value is a caller's bug, so it raises."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def clean_text(value: str | None) -> str | None:
    """Text PostgreSQL accepts: it refuses NUL characters in text and JSON strings."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def json_safe(value: Any, *, _depth: int = 0) -> Any:
    """``value`` made storable as JSON: containers kept, date/times as ISO text, any other
    non-JSON value (and non-finite floats, which JSONB refuses) as its ``repr``."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if _depth >= _MAX_JSON_DEPTH:
        return clean_text(repr(value))
    if isinstance(value, Mapping):
        return {
            clean_text(key if isinstance(key, str) else repr(key)): json_safe(
                item, _depth=_depth + 1
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item, _depth=_depth + 1) for item in value]
    return clean_text(repr(value))


def capped_json(value: Any, *, max_bytes: int) -> Any:
    """``json_safe(value)``, or ``{"truncated": True, "preview": ...}`` holding the first
    ``max_bytes`` bytes of its JSON text when the whole would be larger."""
    safe = json_safe(value)
    if safe is None:
        return None
    encoded = json.dumps(safe, ensure_ascii=False).encode("utf-8")
    if len(encoded) <= max_bytes:
        return safe
    return {"truncated": True, "preview": encoded[:max_bytes].decode("utf-8", "ignore")}
