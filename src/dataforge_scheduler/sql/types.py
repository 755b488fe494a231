"""Column types shared by the models: aware UTC datetimes, JSON/JSONB and str enums.

Storage is UTC everywhere. ``UTCDateTime`` applies the library's naive-datetime rule
(``core.timing``): a naive value is refused on the way in, and a value read back is
aware UTC, including on SQLite, which stores ``DateTime(timezone=True)`` as naive text.
``JSONType`` is JSONB on PostgreSQL (indexable, compact) and plain JSON elsewhere.
``StrEnumType`` stores a ``StrEnum`` as its value in a ``VARCHAR`` (the table's CHECK
constraint lists the values, so raw SQL such as the seed's INSERT keeps working) and
loads it back as the enum member.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import JSON, DateTime, Dialect, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

from dataforge_scheduler.core.timing import aware_utc, stored_utc

__all__ = ["JSONType", "StrEnumType", "UTCDateTime"]

E = TypeVar("E", bound=StrEnum)

# SQL NULL (not JSON ``null``) for Python None: a task that returned nothing has no result.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that only ever holds and returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected an aware datetime, got {type(value).__name__}: {value!r}")
        utc = aware_utc(value, field="datetime")
        # SQLite's DATETIME storage drops the offset; store the UTC wall time, read it as UTC.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else stored_utc(value)


class StrEnumType(TypeDecorator[E], Generic[E]):
    """A ``StrEnum`` stored as its value in ``VARCHAR(length)``."""

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        try:
            return self.enum_class(value).value
        except ValueError:
            allowed = ", ".join(member.value for member in self.enum_class)
            raise ValueError(
                f"{value!r} is not a valid {self.enum_class.__name__} (one of: {allowed})"
            ) from None

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_class(value)
