"""Values made storable as JSON: what a run's kwargs, result and log may hold.

Shared by the store (rows) and the worker (the history records it hands the outbox): a
result is capped before it leaves the task, so no record outgrows ``result_max_bytes``.
PostgreSQL refuses NUL characters in text and JSON strings and non-finite floats in
JSONB; these helpers replace them rather than lose the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any

__all__ = ["capped_json", "clean_text", "json_safe"]

_MAX_JSON_DEPTH = 32


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
