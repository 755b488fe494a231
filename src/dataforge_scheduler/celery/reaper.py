"""The lost-run reaper: every open run that can no longer end by itself becomes ``lost``.

Three kinds of open rows, each with its own proof of death (``lost_run_grace_seconds``
is the grace, the broker's ``celery_broker_visibility_timeout`` the longest a message may
wait unacknowledged before Redis redelivers it):

- ``running``: a task that takes a lock is alive while its Celery task id holds its lock
  (under its scope or any other: its schedule may have been deleted since); a task that
  takes none (``overlap_policy="allow"``, on the task or the schedule), **or whose traits
  this worker does not know** (it does not import the task, so it cannot tell whether a
  lock was taken), is alive until its time limit plus the grace has passed. Runs younger
  than the grace are never judged (they may not hold their lock yet).
- ``pending``: the message was lost or never sent when the row has waited longer than the
  visibility timeout plus the grace since ``sent_at`` (``created_at`` when never sent):
  a message that reached a worker was delivered again by then, so it would have started.
- ``retrying``: the retry message was lost when the attempt that asked for it started
  (``started_at``) longer ago than its time limit (the attempt published the retry before
  it ended) plus the visibility timeout (the retry's countdown must be shorter) plus the
  grace.

A run with a history record still in the outbox is never judged: its start or end is on
its way to the database (``RunJournal.undrained``); when the outbox cannot be asked
(Redis down), no run is judged. A lost row gets an ``error`` saying why, the run's log
from the log bus, and its schedule's counters (a failure, when the run had started).
When the verdict was wrong after all (a lock lost with a Redis restart, a force release,
an expired lock without auto-renew), the run's real outcome still replaces it
(``store.finish_run``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from dataforge_scheduler.celery.outside import Finder, finish_outside
from dataforge_scheduler.core.enums import ExecutionStatus, OverlapPolicy
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError
from dataforge_scheduler.redis.keys import run_scope
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql.store import maintenance as sql

__all__ = [
    "ReapReport",
    "TaskTraits",
    "TraitsLookup",
    "celery_task_traits",
    "reap_lost_executions",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskTraits:
    """What the reaper needs to know about a task: whether it takes a lock, its limit.

    ``overlap_policy`` None means the default (``skip``: the run holds a lock);
    ``time_limit`` None means ``settings.celery_task_default_timeout``.
    """

    overlap_policy: OverlapPolicy | None = None
    time_limit: float | None = None


#: A task name's traits, or None when the task is unknown here (not imported).
TraitsLookup = Callable[[str], TaskTraits | None]


@dataclass
class ReapReport:
    """What one reaper pass saw: runs examined (past the grace), alive, and marked lost."""

    examined: int = 0
    alive: int = 0
    lost: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (the Celery task's result)."""
        return asdict(self)


def reap_lost_executions(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    batch_size: int = 500,
    traits: TraitsLookup | None = None,
) -> ReapReport:
    """Mark every open run that cannot end by itself as ``lost`` (rules in the module
    docstring); safe to run anywhere, any number of times, concurrently.

    ``traits`` tells the reaper each task's own overlap policy and time limit (the
    Celery task passes ``celery_task_traits(app)``); a task it returns None for, and
    every task without it, is judged by its time limit alone.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(
            f"batch_size must be a whole number >= 1, got {batch_size!r}", field="batch_size"
        )
    judge = _Judge(runtime, now=now if now is not None else runtime.clock.now(), traits=traits)
    report = ReapReport()
    _reap_running(judge, report, batch_size)
    for status in (ExecutionStatus.PENDING, ExecutionStatus.RETRYING):
        _reap_waiting(judge, report, status, batch_size)
    if report.lost:
        logger.warning("reaper marked %d run(s) lost: %s", len(report.lost), report.lost)
    return report


def _reap_running(judge: _Judge, report: ReapReport, batch_size: int) -> None:
    runtime, now = judge.runtime, judge.now
    cutoff = now - timedelta(seconds=runtime.settings.lost_run_grace_seconds)
    after: tuple[datetime, int] | None = None
    while True:
        with runtime.session() as session:
            batch = sql.select_running_before(session, cutoff=cutoff, after=after, limit=batch_size)
        waiting = judge.undrained([run.celery_task_id for run in batch])
        for run in batch:
            report.examined += 1
            if run.celery_task_id in waiting:
                report.alive += 1
                continue
            reason = judge.death(run)
            if reason is None:
                report.alive += 1
            elif _mark_lost(judge, run, reason=reason, find=partial(sql.lock_running_run, run=run)):
                report.lost.append(run.id)
        if len(batch) < batch_size:
            return
        after = (batch[-1].started_at, batch[-1].id)


def _reap_waiting(
    judge: _Judge, report: ReapReport, status: ExecutionStatus, batch_size: int
) -> None:
    runtime, now = judge.runtime, judge.now
    cutoff = now - judge.message_wait
    after_id = 0
    while True:
        with runtime.session() as session:
            batch = sql.select_waiting_before(
                session, status=status, cutoff=cutoff, after_id=after_id, limit=batch_size
            )
        waiting = judge.undrained([run.celery_task_id for run in batch])
        for run in batch:
            report.examined += 1
            if run.celery_task_id in waiting:
                report.alive += 1
                continue
            reason = judge.never_came(run)
            if reason is None:
                report.alive += 1
            elif _mark_lost(judge, run, reason=reason, find=partial(sql.lock_waiting_run, run=run)):
                report.lost.append(run.id)
        if len(batch) < batch_size:
            return
        after_id = batch[-1].id


def _mark_lost(
    judge: _Judge, run: sql.RunningRun | sql.WaitingRun, *, reason: str, find: Finder
) -> bool:
    """Finish ``run`` as ``lost`` if ``find`` still finds it as judged; True if this did."""
    finished = finish_outside(
        judge.runtime, find, status=ExecutionStatus.LOST, error=reason, now=judge.now
    )
    if finished is None:
        return False
    logger.warning(
        "execution %d (%s, task %s) is lost: %s", run.id, run.task_name, run.celery_task_id, reason
    )
    return True


class _Judge:
    """Decides, run by run, whether an open row can still end by itself."""

    def __init__(self, runtime: Runtime, *, now: datetime, traits: TraitsLookup | None) -> None:
        self.runtime = runtime
        self.now = now
        self._traits = traits
        self._holders: set[str] | None = None
        settings = runtime.settings
        self.grace = timedelta(seconds=settings.lost_run_grace_seconds)
        visibility = timedelta(seconds=settings.celery_broker_visibility_timeout)
        self.message_wait = visibility + self.grace

    def undrained(self, celery_task_ids: list[str]) -> set[str]:
        """The runs with a history record still in the outbox: alive, as far as the
        reaper can know (their end may be on its way). Every run, when the outbox cannot
        be asked: nothing is judged without it."""
        try:
            return self.runtime.backend.journal.undrained(celery_task_ids)
        except BackendUnavailable as exc:
            logger.warning("reaper: cannot ask the outbox (%s); judging no run this pass", exc)
            return set(celery_task_ids)

    def _limit(self, traits: TaskTraits | None) -> float:
        limit = traits.time_limit if traits is not None else None
        return limit or float(self.runtime.settings.celery_task_default_timeout)

    def _traits_of(self, task_name: str) -> TaskTraits | None:
        return self._traits(task_name) if self._traits is not None else None

    def death(self, run: sql.RunningRun) -> str | None:
        """None while a ``running`` row can be alive, else why it cannot (the row's error)."""
        traits = self._traits_of(run.task_name)
        policies = (run.schedule_overlap_policy, traits.overlap_policy if traits else None)
        if traits is None or OverlapPolicy.ALLOW in policies:
            limit = self._limit(traits)
            if self.now < run.started_at + timedelta(seconds=limit) + self.grace:
                return None
            why = (
                "the run takes no lock (overlap_policy allow)"
                if OverlapPolicy.ALLOW in policies
                else f"task {run.task_name!r} is not known to this worker (it cannot tell "
                "whether the run holds a lock)"
            )
            return (
                f"worker lost: {why} and it started at {run.started_at.isoformat()}, past "
                f"its {limit:g} s time limit plus {self.grace.total_seconds():g} s grace; "
                f"it ran {_where(run)}"
            )
        scope = run_scope(run.task_name, run.scheduled_task_id)
        holder = self.runtime.locks.get(scope)
        if holder is not None and holder.celery_task_id == run.celery_task_id:
            return None
        if run.celery_task_id in self._lock_holders():
            return None
        state = "is gone (expired or released)"
        if holder is not None:
            state = f"is held by another run, task {holder.celery_task_id}"
        return f"worker lost: its lock {scope!r} {state}; it ran {_where(run)}"

    def never_came(self, run: sql.WaitingRun) -> str | None:
        """None while a ``pending``/``retrying`` row's message may still come, else why not."""
        waited = self.message_wait
        visibility = self.runtime.settings.celery_broker_visibility_timeout
        if run.status is ExecutionStatus.RETRYING:
            limit = self._limit(self._traits_of(run.task_name))
            if self.now < run.since + timedelta(seconds=limit) + waited:
                return None
            return (
                f"retry never started: the retry message was lost; attempt {run.retries - 1} "
                f"started at {run.since.isoformat()}, more than its {limit:g} s time limit "
                f"plus the {visibility} s visibility timeout plus "
                f"{self.grace.total_seconds():g} s grace ago"
            )
        if self.now < run.since + waited:
            return None
        return (
            "never started: the message was lost or never sent; it waited since "
            f"{run.since.isoformat()}, more than the {visibility} s visibility timeout "
            f"plus {self.grace.total_seconds():g} s grace"
        )

    def _lock_holders(self) -> set[str]:
        # Only consulted for a run missing from its expected scope, once per pass: the
        # worker locks the scope of the schedule id it was sent, which the row no longer
        # names once that schedule is deleted.
        if self._holders is None:
            self._holders = {info.celery_task_id for info in self.runtime.locks.list()}
        return self._holders


def _where(run: sql.RunningRun) -> str:
    host = run.worker_hostname or "an unknown worker"
    return f"on {host} (pid {run.worker_pid})" if run.worker_pid is not None else f"on {host}"


def celery_task_traits(app: Any) -> TraitsLookup:
    """A ``traits`` lookup reading ``overlap_policy`` and ``time_limit`` off ``app``'s
    tasks; None for a task ``app`` does not have."""

    def lookup(task_name: str) -> TaskTraits | None:
        task = app.tasks.get(task_name)
        if task is None:
            return None
        raw_policy = getattr(task, "overlap_policy", None)
        try:
            policy = OverlapPolicy(raw_policy) if raw_policy is not None else None
        except ValueError:
            policy = None
        limit = getattr(task, "time_limit", None) or app.conf.task_time_limit
        return TaskTraits(overlap_policy=policy, time_limit=float(limit) if limit else None)

    return lookup
