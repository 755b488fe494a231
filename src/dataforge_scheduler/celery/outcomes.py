"""What a run's end records: Celery's final state of an attempt mapped to an outcome.

``outcome_of`` is the one table from Celery states to execution statuses
(docs/internals.md §1, §4, §5): SUCCESS → ``success``; FAILURE → ``failed`` with the
error and traceback the ``task_failure`` handler kept; RETRY → ``retrying`` with the
countdown (``Retry.when``); IGNORED → ``skipped`` (locked, with the holder, or the body
raised ``Ignore``); REJECTED → ``failed``; no state (the child was terminated) →
``failed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import states

from dataforge_scheduler.core.context import RunContext
from dataforge_scheduler.core.enums import ExecutionStatus

__all__ = ["TERMINATED", "Outcome", "describe", "outcome_of", "stopped_from_outside"]

TERMINATED = (
    "terminated: the worker stopped this run (hard time limit, revoke(terminate=True) or a signal)"
)


def describe(exception: BaseException | None) -> str:
    """``Type: message`` of an exception, for the ``error`` column."""
    if exception is None:
        return "unknown error"
    text = str(exception)
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__


@dataclass(frozen=True)
class Outcome:
    """What a run's end writes: status, result, error, traceback, retry countdown."""

    status: ExecutionStatus
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    countdown: float = 0.0


def outcome_of(run: RunContext, state: str | None, *, retval: Any, now: datetime) -> Outcome:
    """Map Celery's final ``state`` of an attempt to the execution's outcome."""
    kept = run.state
    if state == states.SUCCESS:
        return Outcome(ExecutionStatus.SUCCESS, result=retval)
    if state == states.FAILURE:
        error = kept.error or describe(retval if isinstance(retval, BaseException) else None)
        return Outcome(ExecutionStatus.FAILED, error=error, traceback=kept.traceback)
    if state == states.RETRY:
        cause = getattr(retval, "exc", None)
        error = kept.error or (describe(cause) if cause is not None else str(retval))
        return Outcome(
            ExecutionStatus.RETRYING,
            error=error,
            traceback=kept.traceback,
            countdown=_countdown(getattr(retval, "when", None), now=now),
        )
    if state == states.IGNORED:
        if kept.skipped_by is not None:
            result = {"skipped": "locked", "holder": kept.skipped_by}
            return Outcome(ExecutionStatus.SKIPPED, result=result, error=kept.error)
        return Outcome(ExecutionStatus.SKIPPED, error=f"the task raised Ignore: {retval!r}")
    if state == states.REJECTED:
        return Outcome(ExecutionStatus.FAILED, error=f"rejected: {retval!r}")
    return Outcome(ExecutionStatus.FAILED, error=kept.error or TERMINATED, traceback=kept.traceback)


def stopped_from_outside(state: str | None) -> bool:
    """Whether an attempt ended with no state of its own: the worker stopped it (a
    revoke with terminate, a signal), and the reason may be known elsewhere."""
    return state not in _OWN_STATES


_OWN_STATES = frozenset(
    {states.SUCCESS, states.FAILURE, states.RETRY, states.IGNORED, states.REJECTED}
)


def _countdown(when: Any, *, now: datetime) -> float:
    if isinstance(when, int | float) and not isinstance(when, bool):
        return max(0.0, float(when))
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            return 0.0
    if isinstance(when, datetime) and when.tzinfo is not None:
        return max(0.0, (when - now).total_seconds())
    return 0.0
