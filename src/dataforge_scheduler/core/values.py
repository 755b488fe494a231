"""The small values the ports exchange, and the rules both sides of a port share.

Lock owners and holders (``LockOwner``, ``LockInfo``, ``Acquired``), log lines and the
end of a log (``LogLine``, ``LogEnd``), TTL rounding and the text a log accepts. Plain
frozen values over the standard library; ``core.ports`` re-exports them with the
Protocols that use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from dataforge_scheduler.errors import ConfigurationError

__all__ = [
    "Acquired",
    "LockInfo",
    "LockOwner",
    "LogEnd",
    "LogLine",
    "capped_log_text",
    "truncation_marker",
    "ttl_milliseconds",
    "writable_line",
]


@dataclass(frozen=True)
class LockOwner:
    """Who takes a lock: the Celery task id is the identity, the rest is for operators."""

    celery_task_id: str
    execution_id: int | None = None
    hostname: str | None = None
    pid: int | None = None

    def __post_init__(self) -> None:
        if not self.celery_task_id:
            raise ConfigurationError(
                "LockOwner.celery_task_id must be a non-empty string",
                field="celery_task_id",
                value=self.celery_task_id,
            )


@dataclass(frozen=True)
class LockInfo:
    """A held lock as an operator sees it; ``ttl_seconds`` is the time left (None: no expiry)."""

    key: str
    scope: str
    token: str
    celery_task_id: str
    execution_id: int | None
    hostname: str | None
    pid: int | None
    acquired_at: datetime
    ttl_seconds: float | None


@dataclass(frozen=True)
class Acquired:
    """A successful ``acquire``: the token to extend and release with."""

    token: str
    reentered: bool


def ttl_milliseconds(ttl: float) -> int:
    """``ttl`` seconds as whole milliseconds, rounded up, at least 1.

    Raises ``ConfigurationError`` for a TTL that is not a positive finite number.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ConfigurationError(
            f"ttl must be a finite number of seconds, got {ttl!r}", field="ttl"
        )
    if ttl <= 0:
        raise ConfigurationError(f"ttl must be positive, got {ttl!r}", field="ttl")
    return max(1, math.ceil(ttl * 1000))


@dataclass(frozen=True)
class LogLine:
    """One line of a run's log; ``seq`` is its 0-based index in that log."""

    seq: int
    text: str


@dataclass(frozen=True)
class LogEnd:
    """The run ended with ``status`` (an ``ExecutionStatus`` value)."""

    status: str


def writable_line(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) replaced by ``?``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def truncation_marker(dropped_bytes: int) -> str:
    """The line that ends a log cut at its size limit."""
    return f"… [log truncated: {dropped_bytes} more bytes]"


def capped_log_text(lines: list[str], *, max_bytes: int) -> str | None:
    """``lines`` joined for ``log_output``, cut at ``max_bytes`` with a visible marker."""
    kept: list[str] = []
    used = dropped = 0
    for line in lines:
        size = len(line.encode("utf-8", "replace")) + 1
        if dropped or used + size > max_bytes:
            dropped += size
            continue
        kept.append(line)
        used += size
    if dropped:
        kept.append(truncation_marker(dropped))
    return "\n".join(kept) if kept else None
