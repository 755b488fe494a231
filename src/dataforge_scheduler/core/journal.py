"""A run's history on its way to the database: the outbox records and what a run's
start and end ask of the backend in one step each.

A worker's pool process never waits on the database. When a run starts, one step takes
the run's lock (``LockRequest``), checks that this delivery is not a duplicate, and
appends a ``StartRecord`` to the outbox; when it ends, one step appends its last log
lines, ends its live log, releases or extends the lock (``LockEnd``) and appends a
``FinishRecord``. The history writer reads the outbox (``OutboxEntry``), applies the
records to ``task_executions`` in batches, and only then acknowledges them. Records are
JSON on the wire (``encode_record``/``decode_record``); every instant is aware UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.timing import aware_utc
from dataforge_scheduler.core.values import Acquired, LockInfo, LockOwner

__all__ = [
    "FinishRecord",
    "LockEnd",
    "LockEndAction",
    "LockRequest",
    "OutboxEntry",
    "OutboxStats",
    "Record",
    "StartOutcome",
    "StartRecord",
    "decode_record",
    "encode_record",
]


@dataclass(frozen=True)
class StartRecord:
    """A run started in a worker: what the ``running`` row holds.

    ``retries`` is the attempt (``request.retries``); ``redelivered`` says the broker
    delivered this message again after its worker was lost, which may restart the same
    attempt.
    """

    celery_task_id: str
    task_name: str
    scheduled_task_id: int | None
    trigger: str
    worker_hostname: str | None
    worker_pid: int | None
    kwargs: dict[str, Any]
    retries: int
    at: datetime
    redelivered: bool = False


@dataclass(frozen=True)
class FinishRecord:
    """A run's attempt ended: its outcome (``retrying`` for a retry).

    ``result`` is already JSON-safe and capped. ``log`` is the run's whole log as
    ``log_output`` stores it; None means the writer reads it from the log bus (a run that
    retried, or one finished from outside its process). ``attempt`` None finishes
    whatever attempt the row is at (an end seen from the worker's main process).
    """

    celery_task_id: str
    status: ExecutionStatus
    at: datetime
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    attempt: int | None = None
    log: str | None = None

    @property
    def final(self) -> bool:
        return self.status.finished


Record = StartRecord | FinishRecord


@dataclass(frozen=True)
class LockRequest:
    """Take ``scope`` for ``owner`` (re-entrant for the same Celery task id)."""

    scope: str
    owner: LockOwner
    ttl: float


class LockEndAction(StrEnum):
    """What a run's end does to its lock."""

    RELEASE = "release"  # by token: the run's own end
    RELEASE_FOR_TASK = "release_task"  # by Celery task id: an end seen from outside
    EXTEND = "extend"  # by token, past a retry's countdown: the next attempt re-enters


@dataclass(frozen=True)
class LockEnd:
    """The lock step of a run's end; ``key`` is the token or, for ``release_task``, the
    Celery task id; ``ttl`` the new TTL for ``extend``."""

    scope: str
    action: LockEndAction
    key: str
    ttl: float | None = None


@dataclass(frozen=True)
class StartOutcome:
    """What a start step found.

    ``duplicate``: this delivery repeats an attempt that already started (or a finished
    run); its body must not run and nothing was recorded. ``holder``: another run holds
    the lock, so this run is skipped (its start was recorded). ``acquired``: the lock it
    took (None when it asked for none).
    """

    duplicate: bool = False
    acquired: Acquired | None = None
    holder: LockInfo | None = None


@dataclass(frozen=True)
class OutboxEntry:
    """One record as a writer read it; ``entry_id`` acknowledges it."""

    entry_id: str
    record: Record = field(compare=False)


@dataclass(frozen=True)
class OutboxStats:
    """How far behind the writers are: records not yet applied (``length``, of which
    ``in_flight`` are read but unacknowledged) and the oldest one's age in seconds."""

    length: int
    in_flight: int
    oldest_age_seconds: float | None


def encode_record(record: Record) -> str:
    """The record as compact JSON (``"k"``: ``"s"`` start, ``"f"`` finish)."""
    if isinstance(record, StartRecord):
        payload: dict[str, Any] = {
            "k": "s",
            "id": record.celery_task_id,
            "task": record.task_name,
            "sched": record.scheduled_task_id,
            "trig": record.trigger,
            "host": record.worker_hostname,
            "pid": record.worker_pid,
            "kw": record.kwargs,
            "try": record.retries,
            "at": record.at.isoformat(),
            "redel": record.redelivered,
        }
    else:
        payload = {
            "k": "f",
            "id": record.celery_task_id,
            "st": record.status.value,
            "at": record.at.isoformat(),
            "res": record.result,
            "err": record.error,
            "tb": record.traceback,
            "try": record.attempt,
            "log": record.log,
        }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def decode_record(text: str | bytes) -> Record:
    """The record ``encode_record`` wrote; ``ValueError`` for anything else."""
    payload = json.loads(text)
    if not isinstance(payload, dict):
        raise ValueError(f"an outbox record is a JSON object, got {type(payload).__name__}")
    kind = payload.get("k")
    at = aware_utc(datetime.fromisoformat(payload["at"]), field="at")
    if kind == "s":
        return StartRecord(
            celery_task_id=str(payload["id"]),
            task_name=str(payload["task"]),
            scheduled_task_id=payload.get("sched"),
            trigger=str(payload["trig"]),
            worker_hostname=payload.get("host"),
            worker_pid=payload.get("pid"),
            kwargs=dict(payload.get("kw") or {}),
            retries=int(payload["try"]),
            at=at,
            redelivered=bool(payload.get("redel")),
        )
    if kind == "f":
        return FinishRecord(
            celery_task_id=str(payload["id"]),
            status=ExecutionStatus(payload["st"]),
            at=at,
            result=payload.get("res"),
            error=payload.get("err"),
            traceback=payload.get("tb"),
            attempt=payload.get("try"),
            log=payload.get("log"),
        )
    raise ValueError(f"unknown outbox record kind {kind!r}")
