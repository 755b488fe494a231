"""Sending a pass's slots: publish each claimed slot through the scheduler's dispatcher,
record the sends, sweep slots claimed but not sent (a scheduler died, the broker
refused them, or a ``catch_up`` backlog waits its turn) by their schedule's rules, and
send a backfill's slots one at a time.

A slot refused by an unreachable broker stays claimed and unsent (``sent_at`` NULL), and
so do the slots after it in that pass: the sweep of any scheduler sends them later. A
slot a hook failed to publish is kept for the sweep too, and the other slots go on.
Sending happens after the claim committed, so nothing here can send a slot twice that
its row does not allow: a worker runs a slot only from ``pending``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dataforge_scheduler.core.backlog import sweep_schedule
from dataforge_scheduler.core.enums import OverlapPolicy
from dataforge_scheduler.core.messages import RunMessage
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.errors import BackendUnavailable, DataForgeError
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.store import backfill as backfills
from dataforge_scheduler.sql.store import sweep as sweeps

if TYPE_CHECKING:
    from dataforge_scheduler.celery.beat import DatabaseScheduler

__all__ = ["SlotSender"]

logger = logging.getLogger(__name__)

ORPHAN_REASON = "missed: its schedule was deleted before the slot was sent"


class SlotSender:
    """Sends one scheduler's slots (its dispatcher, clock, hooks and settings)."""

    def __init__(self, scheduler: DatabaseScheduler) -> None:
        self._scheduler = scheduler

    def send_and_record(
        self, slots: Sequence[ClaimedSlot]
    ) -> tuple[list[ClaimedSlot], list[ClaimedSlot]]:
        """Publish the slots this pass claimed and record ``sent_at``; (sent, unsent)."""
        if not slots:
            return [], []
        sent, unsent = self.publish(slots)
        if sent:
            try:
                with self._scheduler.runtime.session() as session:
                    store.mark_sent(
                        session, [s.execution_id for s in sent], now=self._scheduler.clock.now()
                    )
            except (DataForgeError, OSError) as exc:
                logger.warning(
                    "could not record %d send(s): %s; they may be re-sent", len(sent), exc
                )
        return sent, unsent

    def sweep(self, now: datetime) -> tuple[list[ClaimedSlot], list[ClaimedSlot]]:
        """Send, or record ``missed``, the slots claimed more than
        ``resend_after_seconds`` ago and never sent, by their schedule's rules
        (``core.backlog.sweep_schedule``): a schedule's own backlog never races itself."""
        before = now - timedelta(seconds=self._scheduler.resend_after_seconds)
        with self._scheduler.runtime.session() as session:
            backlogs, orphans = sweeps.select_unsent(
                session,
                created_before=before,
                limit=self._scheduler.batch_size,
                extra=self._scheduler.claim_filter(),
                sent_since=now - timedelta(seconds=self._scheduler.unstarted_wait_seconds),
            )
            missed = [(orphan, ORPHAN_REASON) for orphan in orphans]
            sending: list[ClaimedSlot] = []
            for backlog in backlogs:
                decided = sweep_schedule(
                    backlog.slots,
                    when=[slot.scheduled_for or now for slot in backlog.slots],
                    newest_slot=backlog.newest_slot,
                    in_flight=backlog.in_flight,
                    misfire=backlog.misfire_policy,
                    overlap=backlog.overlap_policy
                    if self._scheduler.takes_lock(backlog.slots[0].task_name)
                    else OverlapPolicy.ALLOW,
                )
                missed.extend((slot.execution_id, reason) for slot, reason in decided.missed)
                sending.extend(decided.send)
                self._log_sweep(backlog, decided.send, decided.missed)
            sweeps.mark_missed(session, missed, now=now)
            if not sending:
                return [], []
            sweeps.send_queued(session, [slot.execution_id for slot in sending])
            sent, unsent = self.publish(sending)  # the schedules stay locked while sent
            store.mark_sent(
                session, [s.execution_id for s in sent], now=self._scheduler.clock.now()
            )
        return sent, unsent

    def send_backfill(self, now: datetime) -> tuple[list[ClaimedSlot], list[ClaimedSlot]]:
        """Send the next backfill slot of each schedule whose turn it is (nothing else
        of it open; ``sql.store.backfill.select_backfill``), oldest slot first, with the
        schedules locked while they are sent. A slot the broker refuses goes back in line
        (``queued``) for the next pass; one whose schedule was deleted is recorded
        ``missed``."""
        with self._scheduler.runtime.session() as session:
            sending, orphans = backfills.select_backfill(
                session,
                now=now,
                limit=self._scheduler.batch_size,
                extra=self._scheduler.claim_filter(),
            )
            sweeps.mark_missed(session, [(orphan, ORPHAN_REASON) for orphan in orphans], now=now)
            if not sending:
                return [], []
            sweeps.send_queued(session, [slot.execution_id for slot in sending])
            for slot in sending:
                logger.info(
                    "sending backfill slot %s of %s",
                    slot.scheduled_for.isoformat() if slot.scheduled_for else None,
                    slot.schedule_name,
                )
            sent, unsent = self.publish(sending)
            backfills.requeue_backfill(session, [slot.execution_id for slot in unsent])
            store.mark_sent(
                session, [s.execution_id for s in sent], now=self._scheduler.clock.now()
            )
        return sent, unsent

    @staticmethod
    def _log_sweep(
        backlog: sweeps.UnsentBacklog,
        sending: Sequence[ClaimedSlot],
        missed: Sequence[tuple[ClaimedSlot, str]],
    ) -> None:
        for slot in sending:
            # a slot that waited its turn is sent this way by design; any other was stranded
            queued = slot.execution_id in backlog.queued
            logger.log(
                logging.INFO if queued else logging.WARNING,
                "sending slot %s of %s, claimed earlier and not sent yet (%s)",
                slot.scheduled_for.isoformat() if slot.scheduled_for else None,
                slot.schedule_name,
                f"it waited for the run before it (misfire policy {backlog.misfire_policy}, "
                f"overlap policy {backlog.overlap_policy})"
                if queued
                else "a scheduler stopped between its claim and its send, or the broker refused it",
            )
        for slot, reason in missed:
            logger.warning(
                "slot %s of %s was claimed and never sent: recorded as %s",
                slot.scheduled_for.isoformat() if slot.scheduled_for else None,
                slot.schedule_name,
                reason,
            )

    def publish(self, slots: Sequence[ClaimedSlot]) -> tuple[list[ClaimedSlot], list[ClaimedSlot]]:
        """Dispatch each slot in one dispatcher batch, then call ``after_send`` for each
        slot the broker took; stop at an unreachable broker.

        A batch whose write failed as it ended sent none of its slots for sure (see
        ``CeleryDispatcher.batch``): they are sent again one by one, outside a batch, so
        a message the broker refuses fails alone and a broker that is down fails the
        first send (a run delivered twice this way runs once).
        """
        batch = getattr(self._scheduler.dispatcher, "batch", None)
        if batch is None:
            return self._confirmed(*self._hand_over(slots))
        try:
            with batch():
                handed, unsent = self._hand_over(slots)
        except BackendUnavailable as exc:
            logger.warning("%s: sending the pass's slots one by one", exc)
            return self._confirmed(*self._hand_over(slots))
        return self._confirmed(handed, unsent)

    def _confirmed(
        self, handed: list[tuple[ClaimedSlot, RunMessage]], unsent: list[ClaimedSlot]
    ) -> tuple[list[ClaimedSlot], list[ClaimedSlot]]:
        for slot, message in handed:
            try:
                self._scheduler.after_send(slot, message)
            except Exception:
                logger.exception("after_send failed for %s", slot.celery_task_id)
        return [slot for slot, _ in handed], unsent

    def _hand_over(
        self, slots: Sequence[ClaimedSlot]
    ) -> tuple[list[tuple[ClaimedSlot, RunMessage]], list[ClaimedSlot]]:
        handed: list[tuple[ClaimedSlot, RunMessage]] = []
        unsent: list[ClaimedSlot] = []
        for index, slot in enumerate(slots):
            logger.info(
                "Sending due task %s (%s) slot %s as %s",
                slot.schedule_name,
                slot.task_name,
                slot.scheduled_for.isoformat() if slot.scheduled_for else None,
                slot.celery_task_id,
            )
            try:
                message = self._scheduler.dispatcher.dispatch(slot)
            except BackendUnavailable as exc:
                logger.error(
                    "broker unavailable (%s): %d slot(s) stay claimed and unsent; they are "
                    "sent again after %.0f s",
                    exc,
                    len(slots) - index,
                    self._scheduler.resend_after_seconds,
                )
                unsent.extend(slots[index:])
                break
            except Exception:  # a hook or serialisation bug: keep the other slots going
                logger.exception("could not send slot %s of %s", slot.scheduled_for, slot.task_name)
                unsent.append(slot)
                continue
            handed.append((slot, message))
        return handed, unsent
