"""Shared shapes: the error body, paging query parameters, bounded datetimes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from dataforge_scheduler.core.timing import within_calendar
from dataforge_scheduler.errors import InvalidSchedule
from dataforge_scheduler.sql.store import MAX_CURSOR_LENGTH, MAX_PAGE_SIZE

__all__ = [
    "MAX_PAGE_SIZE",
    "ErrorItem",
    "ErrorResponse",
    "PageFields",
    "PageQuery",
    "UTCDateTimeIn",
]


def _bounded(value: datetime) -> datetime:
    """The library's naive-datetime rule and calendar bounds (``core.timing``), so
    trigger arithmetic can never overflow."""
    try:
        return within_calendar(value, field="datetime")
    except InvalidSchedule as exc:
        raise ValueError(exc.message) from None


UTCDateTimeIn = Annotated[AwareDatetime, AfterValidator(_bounded)]
"""A timezone-aware datetime (ISO 8601 with an offset) between the years 1900 and 9000,
stored as UTC."""


class ErrorItem(BaseModel):
    """One validation problem: where (``loc``), what (``msg``) and its kind (``type``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error answer: a sentence, or the list of validation problems (422)."""

    detail: str | list[ErrorItem]


class PageFields(BaseModel):
    """What every page answers besides its ``items``."""

    total: int | None = Field(description="every match, when asked (count=true); else null")
    page: int | None = Field(description="the page number asked for; null for a cursor's page")
    page_size: int
    next_cursor: str | None = Field(
        description="pass as cursor for the next page; null: this is the last"
    )


class PageQuery(BaseModel):
    """Paging of a listing: ``cursor`` (the ``next_cursor`` of the page before) or
    ``page`` (from 1; neither: the first page), ``page_size`` (capped at 200; larger
    values are capped), and ``count`` (also count every match: ``total``)."""

    model_config = ConfigDict(extra="ignore")

    cursor: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        description="continue after the page that gave this next_cursor (same filters)",
    )
    page: int | None = Field(
        None, ge=1, le=1_000_000_000, description="a page number (an OFFSET: slower when deep)"
    )
    page_size: int = Field(50, ge=1, le=1_000_000_000)
    count: bool = Field(
        False, description="also count every match (total); null otherwise, as it costs"
    )

    @property
    def capped_size(self) -> int:
        return min(self.page_size, MAX_PAGE_SIZE)
