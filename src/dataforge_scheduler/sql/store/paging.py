"""Pages of a listing: by cursor (keyset) or by page number, with a count only when asked.

A listing is ordered by one column and the row's id (``Order``), NULLs last in both
directions, so every row has one place. A cursor names the last row a page ended on:
its order's name, its value of the column and its id, as URL-safe base64 of JSON. The
next page is the rows after it in that order (``WHERE (col, id) > (value, id)``, spelled
out so NULLs and either direction work on PostgreSQL and SQLite alike), which an index
on the column answers without reading the rows before it, however deep the page; an
``OFFSET`` reads and throws away every row before its page. Rows inserted or deleted
between two requests neither repeat nor vanish from a cursor walk; they may from a
page-number walk.

``COUNT(*)`` of everything that matches is most of a page's cost on a large table, so
``total`` is counted only when the caller asks (``count=True``) and is None otherwise.
A page of ``size`` rows reads ``size + 1`` to know whether another follows
(``next_cursor`` None: this was the last).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dataforge_scheduler.core.timing import within_calendar
from dataforge_scheduler.errors import InvalidParams, InvalidSchedule
from dataforge_scheduler.sql.store.common import invalid_param
from dataforge_scheduler.sql.types import UTCDateTime

__all__ = ["MAX_CURSOR_LENGTH", "MAX_PAGE_SIZE", "Order", "Page", "fetch_page"]

T = TypeVar("T")

MAX_PAGE_SIZE = 200
MAX_CURSOR_LENGTH = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing. ``total`` counts every row that matched the filters (None
    unless counted); ``page`` is the page number of a page-number request (None for a
    cursor's); ``next_cursor`` continues after the last item (None: nothing follows)."""

    items: list[T]
    total: int | None
    page: int | None
    page_size: int
    next_cursor: str | None = None


@dataclass(frozen=True)
class Order:
    """A listing's order: ``column`` (None: the id alone), then ``id``, both descending
    or both ascending, NULLs of the column last. ``name`` goes into each cursor, so a
    cursor made for another order is refused rather than misread."""

    name: str
    id: Any
    column: Any = None
    descending: bool = False

    @property
    def nullable(self) -> bool:
        return self.column is not None and bool(getattr(self.column.expression, "nullable", True))

    def clauses(self) -> list[ColumnElement[Any]]:
        tiebreak = self.id.desc() if self.descending else self.id.asc()
        if self.column is None:
            return [tiebreak]
        primary = self.column.desc() if self.descending else self.column.asc()
        # NULLS LAST spelled only where NULLs can be: on a NOT NULL column it would stop
        # PostgreSQL reading a plain index backwards (DESC means NULLS FIRST there)
        return [primary.nulls_last() if self.nullable else primary, tiebreak]

    def after(self, value: Any, row_id: int) -> ColumnElement[bool]:
        """The rows that come after (``value``, ``row_id``) in this order. The bound on
        the column alone (``col <= value`` when descending) lets an index on it start
        the scan at the cursor instead of filtering every row before it."""

        def beyond(column: Any, bound: Any, *, inclusive: bool = False) -> ColumnElement[bool]:
            if self.descending:
                return column <= bound if inclusive else column < bound  # type: ignore[no-any-return]
            return column >= bound if inclusive else column > bound  # type: ignore[no-any-return]

        if self.column is None:
            return beyond(self.id, row_id)
        if value is None:  # among the NULLs, which come last: only ids beyond
            return and_(self.column.is_(None), beyond(self.id, row_id))
        following = and_(
            beyond(self.column, value, inclusive=True),
            or_(beyond(self.column, value), beyond(self.id, row_id)),
        )
        return or_(following, self.column.is_(None)) if self.nullable else following

    def key_of(self, row: Any) -> tuple[Any, int]:
        value = None if self.column is None else getattr(row, self.column.key)
        return value, int(getattr(row, self.id.key))


def encode_cursor(order: Order, value: Any, row_id: int) -> str:
    if isinstance(value, datetime):
        encoded: Any = {"t": value.isoformat()}
    else:
        encoded = value
    raw = json.dumps([order.name, encoded, row_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(order: Order, cursor: str) -> tuple[Any, int]:
    """(value, id) of a cursor made for ``order``; ``InvalidParams`` naming ``cursor``."""

    def refused(why: str) -> InvalidParams:
        return invalid_param(
            "cursor",
            cursor,
            message=f"cursor is not one this listing gave ({why}); start again without it",
        )

    if len(cursor) > MAX_CURSOR_LENGTH:
        raise refused("too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, value, row_id = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise refused("it cannot be read") from None
    if name != order.name:
        raise refused(f"it was made for the order {name!r}, not {order.name!r}")
    if isinstance(row_id, bool) or not isinstance(row_id, int) or not 0 <= row_id < 2**63:
        raise refused("its id is not a row id")
    if isinstance(value, dict):
        try:
            (text,) = value.values()
            value = datetime.fromisoformat(text)
        except (ValueError, TypeError):
            raise refused("its time cannot be read") from None
        if value.tzinfo is None:
            raise refused("its time has no offset")
        try:
            value = within_calendar(value, field="cursor")
        except InvalidSchedule:
            raise refused("its time is outside the calendar") from None
    if not _holds(order, value):
        raise refused("its value is not one the order's column holds")
    return value, row_id


def _holds(order: Order, value: Any) -> bool:
    """Whether ``value`` is of the kind the order's column holds (None only where NULL
    may be), so a forged cursor never reaches the database as a mistyped comparison."""
    if order.column is None:
        return value is None
    if value is None:
        return order.nullable
    if isinstance(order.column.type, UTCDateTime):
        return isinstance(value, datetime)
    kind = order.column.type.python_type
    return isinstance(value, kind) and not isinstance(value, bool)


def fetch_page(
    session: Session,
    query: Select[Any],
    *,
    order: Order,
    page_size: int,
    page: int | None = None,
    cursor: str | None = None,
    count: bool = False,
) -> Page[Any]:
    """The page of ``query``'s rows after ``cursor``, or page number ``page`` (from 1;
    neither: the first page), in ``order``. ``page_size`` is capped at
    ``MAX_PAGE_SIZE``; ``count`` also counts every match. Giving both ``page`` and
    ``cursor`` is refused."""
    if page is not None and cursor is not None:
        raise invalid_param("cursor", cursor, message="give cursor or page, not both")
    size = min(_positive_int("page_size", page_size), MAX_PAGE_SIZE)
    total = None
    if count:
        counted = select(func.count()).select_from(query.order_by(None).subquery())
        total = int(session.scalar(counted) or 0)
    paged = query.order_by(*order.clauses()).limit(size + 1)
    if cursor is not None:
        paged = paged.where(order.after(*decode_cursor(order, cursor)))
    elif page is not None:
        paged = paged.offset((_positive_int("page", page) - 1) * size)
    rows = list(session.scalars(paged))
    items, more = rows[:size], len(rows) > size
    following = encode_cursor(order, *order.key_of(items[-1])) if more else None
    number = None if cursor is not None else (page or 1)
    return Page(items=items, total=total, page=number, page_size=size, next_cursor=following)


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_param(
            field, value, message=f"{field} must be a whole number >= 1, got {value!r}"
        )
    return value
