"""Validation of schedule fields a caller sets, before any of them reaches a row.

Each value is checked against its column (type, nullability, length) and the few rules
the columns cannot say (positive intervals, known timezones, JSON-storable kwargs), so
a bad value is refused with ``InvalidSchedule`` naming the field, never by the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Integer, String, inspect

from dataforge_scheduler.core.enums import MisfirePolicy, OverlapPolicy, TaskStatus, TaskType
from dataforge_scheduler.core.exclusions import clean_exclusions
from dataforge_scheduler.core.triggers import validate_timezone
from dataforge_scheduler.errors import InvalidSchedule
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.types import UTCDateTime

__all__ = [
    "PAUSE_NOTE_MAX_LENGTH",
    "REQUIRED_FIELDS",
    "SCHEDULE_FIELDS",
    "TRIGGER_FIELDS",
    "clean_fields",
    "clean_pause_note",
]

PAUSE_NOTE_MAX_LENGTH = 500

SCHEDULE_FIELDS: frozenset[str] = frozenset(
    {
        "name",
        "description",
        "task_type",
        "task_name",
        "cron_expression",
        "interval_seconds",
        "run_at",
        "timezone",
        "handler_kwargs",
        "status",
        "is_system",
        "queue",
        "priority",
        "expire_seconds",
        "start_at",
        "end_at",
        "misfire_policy",
        "misfire_grace_seconds",
        "overlap_policy",
        "pause_after_failures",
        "max_runs",
        "exclusions",
    }
)
"""The configurable columns of ``scheduled_tasks``; the rest belong to the scheduler
(``next_run_at``), the workers (``last_*`` and counters) or the database."""

TRIGGER_FIELDS: frozenset[str] = frozenset(
    {
        "task_type",
        "cron_expression",
        "interval_seconds",
        "run_at",
        "timezone",
        "start_at",
        "end_at",
        "exclusions",
    }
)
"""Fields that decide when a schedule fires; changing one recomputes ``next_run_at``."""

REQUIRED_FIELDS = ("name", "task_type", "task_name")

_ENUMS: dict[str, type[StrEnum]] = {
    "task_type": TaskType,
    "status": TaskStatus,
    "misfire_policy": MisfirePolicy,
    "overlap_policy": OverlapPolicy,
}
_MINIMUM = {
    "interval_seconds": 1,
    "expire_seconds": 1,
    "misfire_grace_seconds": 0,
    "priority": 0,
    "pause_after_failures": 1,
    "max_runs": 1,
}
_MAXIMUM = {"priority": 255}  # AMQP's ceiling; Redis transports use 0-9 of it
_NOT_BLANK = frozenset({"name", "task_name", "cron_expression", "queue"})


def _invalid(field: str, value: Any, *, reason: str) -> InvalidSchedule:
    return InvalidSchedule(f"{field} {reason}, got {value!r}", field=field, value=value)


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` checked and normalised (enums as members, datetimes as UTC, kwargs as a
    plain dict); ``InvalidSchedule`` names the first unknown or bad field."""
    unknown = sorted(set(fields) - SCHEDULE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(SCHEDULE_FIELDS))
        raise InvalidSchedule(
            f"unknown schedule field {unknown[0]!r} (settable fields: {allowed})",
            field=unknown[0],
            value=fields[unknown[0]],
        )
    return {name: _clean(name, value) for name, value in fields.items()}


def clean_pause_note(note: Any) -> str:
    """A pause's note checked (a string of 1 to ``PAUSE_NOTE_MAX_LENGTH`` characters);
    ``InvalidSchedule`` names ``note`` otherwise."""
    if isinstance(note, str) and not note.strip():
        raise _invalid("note", note, reason="must not be blank")
    return _string("note", note, length=PAUSE_NOTE_MAX_LENGTH)


def _clean(name: str, value: Any) -> Any:
    column: Column[Any] = inspect(ScheduledTask).columns[name]
    if value is None:
        if not column.nullable:
            raise _invalid(name, value, reason="cannot be null")
        return None
    if name in _ENUMS:
        return _enum(name, value)
    if name == "exclusions":  # the windows' wall times are read in the zone when used
        return clean_exclusions(value, "UTC")
    if name == "timezone":
        validate_timezone(value, field="timezone")
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return _datetime(name, value)
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise _invalid(name, value, reason="must be true or false")
        return value
    if isinstance(kind, Integer):
        return _integer(name, value)
    if isinstance(kind, String):
        return _string(name, value, length=kind.length)
    if isinstance(kind, JSON):
        return _json_object(name, value)
    raise AssertionError(f"no rule for schedule field {name}")  # pragma: no cover


def _enum(name: str, value: Any) -> StrEnum:
    enum = _ENUMS[name]
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise _invalid(name, value, reason=f"must be one of {allowed}") from None


def _datetime(name: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise _invalid(name, value, reason="must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise _invalid(name, value, reason="must be timezone-aware")
    return value.astimezone(UTC)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, value, reason="must be a whole number")
    if name in _MINIMUM and value < _MINIMUM[name]:
        raise _invalid(name, value, reason=f"must be at least {_MINIMUM[name]}")
    if name in _MAXIMUM and value > _MAXIMUM[name]:
        raise _invalid(name, value, reason=f"must be at most {_MAXIMUM[name]}")
    if not -(2**31) <= value < 2**31:
        raise _invalid(name, value, reason="is out of range")
    return value


def _string(name: str, value: Any, *, length: int | None) -> str:
    if not isinstance(value, str):
        raise _invalid(name, value, reason="must be a string")
    if name in _NOT_BLANK and not value.strip():
        raise _invalid(name, value, reason="must not be blank")
    if length is not None and len(value) > length:
        raise _invalid(name, value, reason=f"must be at most {length} characters")
    if "\x00" in value:
        raise _invalid(name, value, reason="must not contain NUL characters")
    return value


def _json_object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise _invalid(name, value, reason="must be an object with string keys")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _invalid(name, value, reason=f"must be JSON-serialisable ({exc})") from None
    return dict(value)
