"""Shared shapes: the error body, paging query parameters, bounded datetimes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from dataforge_scheduler.core.timing import within_calendar
from dataforge_scheduler.errors import InvalidSchedule
from dataforge_scheduler.sql.store import MAX_PAGE_SIZE

__all__ = [
    "MAX_PAGE_SIZE",
    "ErrorItem",
    "ErrorResponse",
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


class PageQuery(BaseModel):
    """``page`` (from 1) and ``page_size`` (capped at 200; larger values are capped)."""

    model_config = ConfigDict(extra="ignore")

    page: int = Field(1, ge=1, le=1_000_000_000)
    page_size: int = Field(50, ge=1, le=1_000_000_000)

    @property
    def capped_size(self) -> int:
        return min(self.page_size, MAX_PAGE_SIZE)
