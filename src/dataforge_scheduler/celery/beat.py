"""``DatabaseScheduler``: the Celery beat scheduler whose schedule is the database.

It keeps no copy of the table. Each pass asks the ``(status, next_run_at)`` index what
is due, claims those slots in one transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; a ``pending`` execution row per slot, unique per schedule and slot),
advances ``next_run_at`` with the trigger and the misfire policy, commits, and only
then sends each claimed slot through the runtime's ``Dispatcher`` with the Celery task
id stored on its row. A claimed slot that was never sent (a crash between commit and
send) is sent by a later pass of any scheduler. Two look-ups do not follow what is due
(unsent slots; rows inserted by raw SQL without ``next_run_at``, whose index range also
holds every ``manual`` row), so a scheduler runs them at most every
``resend_after_seconds``, not every pass. A row that cannot be planned (an invalid
stored value, a failing hook) is disabled or retried later, alone: the rest of its
batch still goes out. Between passes it waits inside ``tick()`` until the earliest
``next_run_at``, woken early by a schedule-change notice and never longer than
``celery_beat_sync_every``. Several schedulers may run at once against one PostgreSQL
database; none leads. The SQL is in ``sql.store.claims``, the slot arithmetic and
misfire policies in ``core.timing``, planning each row in ``celery.planning``, the
sending in ``celery.sending``, the wait in ``celery.wakeup``; ``docs/scheduler.md``
documents the hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from celery.beat import ScheduleEntry, Scheduler

from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.celery.planning import RowPlanner
from dataforge_scheduler.celery.sending import SlotSender
from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.wakeup import NoticeWaiter
from dataforge_scheduler.core.clock import Clock, ServerClock, SystemClock, utcnow
from dataforge_scheduler.core.enums import (
    ExecutionStatus,
    OverlapPolicy,
)
from dataforge_scheduler.core.messages import RunMessage
from dataforge_scheduler.core.ports import Dispatcher
from dataforge_scheduler.core.slots import ClaimedSlot, PassResult, RowPlan
from dataforge_scheduler.core.timing import aware_utc
from dataforge_scheduler.core.triggers import Trigger, trigger_for
from dataforge_scheduler.errors import ConfigurationError, DataForgeError
from dataforge_scheduler.runtime import Runtime, runtime_for
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.store import ClaimFilter, sweep
from dataforge_scheduler.sql.store import claims as sql

__all__ = ["ClaimedSlot", "DatabaseScheduler", "PassResult", "RunMessage"]

logger = logging.getLogger(__name__)


class DatabaseScheduler(Scheduler):
    """Celery beat scheduler reading ``scheduled_tasks``; see the module docstring.

    Celery builds it (``celery beat -S dataforge_scheduler.DatabaseScheduler``, or the
    app's ``beat_scheduler`` that ``setup()`` sets). Programmatic use (benchmarks,
    fixtures): ``DatabaseScheduler(app, runtime=..., clock=..., dispatcher=...)`` then
    ``run_pass(now)``. Hooks for subclasses: ``claim_filter``, ``trigger_for_row``,
    ``after_send``, ``takes_lock``, ``cancel_runs`` and ``is_registered``. How a run is
    published (routing, headers) is the dispatcher's ``message_for``, shared with "run
    now".
    """

    #: Schedules claimed per transaction; a full batch makes the next pass start at once.
    batch_size = 500
    #: Most on-time slots one schedule gets in one pass (the rest go in the next pass).
    max_slots_per_schedule = 1000
    #: A claimed slot still unsent this many seconds after its claim (the claim's lease)
    #: is swept by any scheduler: sent, or recorded ``missed`` by its schedule's rules.
    resend_after_seconds = 1.5
    #: While slots wait unsent (a ``catch_up`` backlog, a stranded claim), look again
    #: at least this often.
    sweep_every_seconds = 0.5
    #: A slot due while an earlier run of its schedule was sent less than this long ago
    #: and has not started (the broker is holding it: a worker reconnecting, a busy
    #: pool) is ``queued`` behind it rather than sent to race it for the lock; past
    #: this, the earlier run no longer holds it back (its message may be lost).
    unstarted_wait_seconds = 30.0
    #: Wait when rows are due but locked by another scheduler.
    busy_wait_seconds = 0.2
    #: A row whose trigger hook raised is tried again after this many seconds.
    retry_failed_row_seconds = 60.0
    #: After a failed pass (database down), wait this long before the next one.
    retry_pass_seconds = 5.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "message_for" in cls.__dict__:
            raise ConfigurationError(
                f"{cls.__name__}.message_for: how runs are published is the dispatcher's "
                "hook now, shared by the beat and by run now; subclass "
                "dataforge_scheduler.celery.dispatch.CeleryDispatcher, override its "
                "message_for and pass it to setup(..., dispatcher=...)",
                field="message_for",
            )

    def __init__(
        self,
        app: Any,
        *,
        runtime: Runtime | None = None,
        clock: Clock | None = None,
        dispatcher: Dispatcher | None = None,
        lazy: bool = False,
        **kwargs: Any,
    ) -> None:
        # our state first: Scheduler.__init__ calls setup_schedule() unless lazy
        self._runtime = runtime
        self._clock = clock
        self._dispatcher = dispatcher
        self._waiter = NoticeWaiter(
            [
                lambda: store.listen_for_changes(self.runtime.engine),
                lambda: self.runtime.notices.listen(),
            ]
        )
        #: (row id, problem) pairs already logged, so each is logged once
        self.reported_problems: set[tuple[int, str]] = set()
        self._server_clock = ServerClock()
        super().__init__(app, lazy=lazy, **kwargs)

    # ------------------------------------------------------------ collaborators

    @property
    def runtime(self) -> Runtime:
        """The runtime given to the constructor, else the one ``setup()`` bound to the app."""
        if self._runtime is None:
            self._runtime = runtime_for(self.app)
        return self._runtime

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def clock(self) -> Clock:
        """The clock given to the constructor, else the runtime's when a test replaced
        it, else the database server's time (PostgreSQL), read through this host's
        clock and corrected at every pass: a beat on a skewed host neither fires early
        nor late."""
        if self._clock is not None:
            return self._clock
        if type(self.runtime.clock) is SystemClock and self._database_has_time:
            return self._server_clock
        return self.runtime.clock

    @property
    def _database_has_time(self) -> bool:
        # SQLite's clock is this host's: nothing to correct
        return self.runtime.engine.dialect.name == "postgresql"

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            self._dispatcher = self.runtime.dispatcher or CeleryDispatcher(self.app)
        return self._dispatcher

    # ------------------------------------------------------------ Celery's surface

    def setup_schedule(self) -> None:
        """No I/O and no rows loaded: the database is read pass by pass."""
        self.data: dict[str, ScheduleEntry] = {}
        self.runtime  # noqa: B018 -- fail at start-up, not in the loop, without setup()
        if self.app.conf.beat_schedule:
            logger.warning(
                "beat_schedule has %d entries, which DatabaseScheduler ignores: "
                "create them as rows in scheduled_tasks instead",
                len(self.app.conf.beat_schedule),
            )

    def get_schedule(self) -> dict[str, ScheduleEntry]:
        return self.data  # always empty: nothing walks the table

    schedule = property(get_schedule, Scheduler.set_schedule)

    def schedules_equal(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def sync(self) -> None:
        """Nothing to flush: every claim is written when it is made."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass, then a wait inside this call; returns 0 so Celery's loop calls it
        again at once (docs/internals.md §10). A closed scheduler passes no
        more and asks for a pause."""
        if self._waiter.closed:
            return 1.0
        try:
            result = self.run_pass()
        except (DataForgeError, OSError) as exc:
            logger.error(
                "beat pass failed (%s: %s); trying again in %.0f s",
                type(exc).__name__,
                exc,
                self.retry_pass_seconds,
            )
            self._waiter.wait(self.retry_pass_seconds)
            return 0.0
        except Exception:  # a bug must not kill beat: it would fail again at every restart
            logger.exception("beat pass failed; trying again in %.0f s", self.retry_pass_seconds)
            self._waiter.wait(self.retry_pass_seconds)
            return 0.0
        wait = self._wait_seconds(result)
        logger.debug(
            "beat pass: %d schedule(s) claimed, %d slot(s) sent, next run at %s; waiting %.2f s",
            result.claimed_schedules,
            len(result.sent),
            result.next_run_at,
            wait,
        )
        if wait > 0:
            self._waiter.wait(wait)
        return 0.0

    def close(self) -> None:
        """Stop waiting and release the notice listener; safe to call twice."""
        if self._waiter.closed:
            return
        self._waiter.close()
        super().close()
        logger.debug("DatabaseScheduler closed")

    @property
    def info(self) -> str:
        """The banner lines: which database, how many active schedules (one COUNT)."""
        url = store.database_label(self.settings.database_url)
        try:
            with self.runtime.session() as session:
                active = str(sql.count_active(session))
        except (DataForgeError, OSError) as exc:
            active = f"unknown (database unreachable: {type(exc).__name__})"
        return f"    . database -> {url}\n    . active schedules -> {active}"

    # ------------------------------------------------------------ hooks

    def claim_filter(self) -> ClaimFilter:
        """An extra condition on the ``scheduled_tasks`` rows this scheduler claims, as a
        SQLAlchemy expression on ``ScheduledTask`` (e.g. ``ScheduledTask.queue ==
        "reports"``), so schedulers can be partitioned; None claims every row."""
        return None

    def trigger_for_row(self, row: ScheduledTask) -> Trigger:
        """The trigger of a row (custom schedule types); ``InvalidSchedule`` disables it."""
        return trigger_for(row, self.settings.celery_timezone)

    def after_send(self, slot: ClaimedSlot, message: RunMessage) -> None:
        """Called after each slot reached the broker; exceptions are logged, not raised."""

    def takes_lock(self, task_name: str) -> bool:
        """Whether runs of ``task_name`` take their schedule's lock: a DataForgeTask whose
        class does not allow overlap. Slots of a task that takes none cannot race each
        other, so a backlog of them is sent at once (as under ``allow``)."""
        task = self.app.tasks.get(task_name)
        return isinstance(task, DataForgeTask) and (
            task.overlap_policy != OverlapPolicy.ALLOW.value
        )

    def cancel_runs(self, celery_task_ids: Sequence[str], *, reason: str) -> None:
        """Cancel runs of a schedule whose overlap policy is ``cancel_other``: note the
        reason their rows record (``runtime.backend.cancels``; the worker reads it),
        revoke them through the dispatcher (``Dispatcher.cancel``: SIGTERM to a run
        going; one not started yet is dropped when a worker receives it), and record a
        retry waiting out its countdown ``revoked`` at once. Without Redis the note is
        lost (the row then says only "revoked") but the runs are still revoked."""
        cancels = self.runtime.backend.cancels
        try:
            for celery_task_id in celery_task_ids:
                cancels.note(celery_task_id, reason)
        except DataForgeError as exc:
            logger.warning("could not note why run(s) are cancelled (%s); revoking anyway", exc)
        cancel = getattr(self.dispatcher, "cancel", None)
        if cancel is None:
            raise ConfigurationError(
                f"{type(self.dispatcher).__name__} has no cancel(celery_task_ids): a "
                "dispatcher must implement it for overlap policy cancel_other",
                field="dispatcher",
            )
        cancel(celery_task_ids)
        with self.runtime.session() as session:
            sweep.revoke_retrying(session, celery_task_ids, reason=reason, now=self.clock.now())
        logger.warning("cancelled run(s) %s: %s", ", ".join(celery_task_ids), reason)

    def is_registered(self, task_name: str) -> bool:
        """Whether ``task_name`` may be sent; unregistered slots are recorded as failed."""
        return task_name in self.app.tasks

    # ------------------------------------------------------------ the pass

    def run_pass(self, now: datetime | None = None) -> PassResult:
        """Claim every slot due at ``now`` (default: the clock), send them, sweep slots
        claimed but not sent, send the backfill slots whose turn came, and report what
        was sent.

        The pass starts with one statement (``claims.probe``): the database's time, the
        earliest ``next_run_at``, whether a row lacks one, and the oldest unsent slot.
        A pass with nothing due ends there.
        """
        extra = self.claim_filter()
        server_time = self.clock is self._server_clock
        asked_at = utcnow()
        probe = sql.probe(self.runtime.engine, server_time=server_time, extra=extra)
        if probe.server_now is not None:
            self._server_clock.observe(probe.server_now, asked_at=asked_at, answered_at=utcnow())
        now = aware_utc(now, field="now") if now is not None else self.clock.now()
        claimed: list[ClaimedSlot] = []
        rows, earliest, held = 0, probe.earliest, False
        if probe.uninitialised or (earliest is not None and earliest <= now):
            claimed, rows, earliest, held = self._claim(now, fresh=probe.uninitialised)
        sender = SlotSender(self)
        sent, unsent = sender.send_and_record(claimed)
        resent: list[ClaimedSlot] = []
        still_unsent: list[ClaimedSlot] = []
        lease = timedelta(seconds=self.resend_after_seconds)
        oldest = probe.oldest_unsent
        if probe.queued or (oldest is not None and oldest <= now - lease):
            resent, still_unsent = sender.sweep(now)
        if probe.backfill:  # a backfill's slots wait their turn too (after the sweep's)
            backfilled, refused = sender.send_backfill(now)
            resent, still_unsent = [*resent, *backfilled], [*still_unsent, *refused]
        next_sweep: datetime | None = None
        soonest = now + timedelta(seconds=self.sweep_every_seconds)
        if oldest is not None:  # unsent slots waiting: look again when the oldest's lease ends
            next_sweep = max(oldest + lease, soonest)
        if probe.queued or probe.backfill:  # a backlog waits for its runs to end: look often
            next_sweep = soonest if next_sweep is None else min(next_sweep, soonest)
        if held or unsent or still_unsent:  # this pass left some: look after their lease
            soon = now + lease
            next_sweep = soon if next_sweep is None else min(next_sweep, soon)
        return PassResult(
            sent=(*sent, *resent),
            unsent=(*unsent, *still_unsent),
            claimed_schedules=rows,
            next_run_at=earliest,
            batch_full=rows >= self.batch_size,
            next_sweep_at=next_sweep,
        )

    def _claim(
        self, now: datetime, *, fresh: bool
    ) -> tuple[list[ClaimedSlot], int, datetime | None, bool]:
        """(slots to send, rows claimed, earliest next run, whether slots were held)."""
        extra = self.claim_filter()
        planner = RowPlanner(self)
        with self.runtime.session() as session:
            if fresh:
                rows = sql.select_uninitialised(session, limit=self.batch_size, extra=extra)
                sql.advance_schedules(session, [planner.first_run(row, now) for row in rows])
            rows = sql.select_due(session, now=now, limit=self.batch_size, extra=extra)
            going = sweep.in_flight(
                session,
                [
                    row.id
                    for row in rows
                    if row.overlap_policy != OverlapPolicy.ALLOW and self.takes_lock(row.task_name)
                ],
                sent_since=now - timedelta(seconds=self.unstarted_wait_seconds),
            )
            plans = [planner.plan_guarded(row, now, in_flight=going.get(row.id)) for row in rows]
            slots = [slot for plan in plans for slot in plan.slots]
            inserted = sql.insert_slots(session, slots, now=now)
            sql.advance_schedules(session, [plan.advance(inserted) for plan in plans])
            earliest = sql.earliest_next_run(session, extra=extra)
            claimed = sql.claimed_slots(plans, inserted)
        if rows:
            logger.debug("claimed %d slot(s) of %d due schedule(s)", len(claimed), len(rows))
        for plan in plans:  # after the commit: a claim that failed cancels nothing
            if plan.cancel and any(slot.celery_task_id in inserted for slot in plan.slots):
                self._cancel_guarded(plan)
        held = any(slot.status is ExecutionStatus.QUEUED for slot in slots)
        return claimed, len(rows), earliest, held

    def _cancel_guarded(self, plan: RowPlan) -> None:
        try:
            self.cancel_runs(plan.cancel, reason=plan.cancel_reason or "revoked")
        except Exception:  # the new slot still waits for them; the reaper ends them if lost
            logger.exception(
                "could not cancel run(s) %s of schedule %s (overlap policy cancel_other)",
                ", ".join(plan.cancel),
                plan.row.name,
            )

    # ------------------------------------------------------------ waiting

    def _wait_seconds(self, result: PassResult) -> float:
        if result.batch_full:
            return 0.0
        ceiling = float(min(self.settings.celery_beat_sync_every, self.max_interval or 300))
        wake = [at for at in (result.next_run_at, result.next_sweep_at) if at is not None]
        if not wake:
            return ceiling
        delta = (min(wake) - self.clock.now()).total_seconds()
        if delta <= 0:  # due rows another scheduler holds, or more slots than one pass takes
            return min(self.busy_wait_seconds, ceiling)
        return min(delta, ceiling)
