"""A schedule's own backlog: slots of one schedule that are sendable together never race
each other for its lock. Pure: no database, no Celery.

Several slots of one schedule become sendable at once after an outage (the beat, the
database or the broker was away), or when the unsent sweep finds slots a dead scheduler
claimed. Sent together, they would start together and the schedule's lock would let one
run and record the others ``skipped``, which must mean only "another run was still going".
So, unless the schedule's ``overlap_policy`` is ``allow`` (no lock), its misfire policy
decides, and the rows say which rule applied:

- ``run_once`` and ``skip``: the newest slot runs; the older ones are recorded ``missed``
  with the reason.
- ``catch_up``: all run, one after another in slot order: the oldest is sent now, the
  others wait unsent (``held``) until the run before them has ended; the unsent sweep
  sends them (``sweep_schedule``).

Nor does a slot race an earlier run the broker has not delivered yet (sent, not
started: a worker reconnecting after a broker restart gets both at once): it is held
until that run has ended, then sent by the same sweep.

``split_backlog`` applies that to the slots a pass plans for one schedule;
``sweep_schedule`` to the slots of one schedule that were claimed but not sent.

Then the overlap policy decides what the planned slots do about runs of the schedule
already in flight (``apply_overlap``, from an ``InFlight`` the pass reads):

- ``skip``: sent, unless slots already wait or a run was sent and has not started (held
  behind them); a run still going makes the worker's lock record the new one
  ``skipped``.
- ``buffer_one``: while a run is in flight, the first slot waits (held) and any further
  one is recorded ``skipped`` ("buffer full"); with one already waiting, all are.
- ``cancel_other``: the runs in flight are cancelled (revoked and terminated) and the
  slots wait until they have ended.
- ``allow``: sent; nothing waits for anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Generic, TypeVar

from dataforge_scheduler.core.enums import MisfirePolicy, OverlapPolicy

__all__ = [
    "Backlog",
    "InFlight",
    "Overlap",
    "apply_overlap",
    "buffer_full_reason",
    "cancelled_reason",
    "late_reason",
    "split_backlog",
    "superseded_reason",
    "sweep_schedule",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Backlog(Generic[T]):
    """What to do with a schedule's slots: ``send`` now, keep ``held`` (unsent, sent later
    one at a time), record ``missed`` (not run, by the misfire policy) or ``skipped``
    (not run, by the overlap policy), each with its reason."""

    send: list[T] = field(default_factory=list)
    held: list[T] = field(default_factory=list)
    missed: list[tuple[T, str]] = field(default_factory=list)
    skipped: list[tuple[T, str]] = field(default_factory=list)


@dataclass(frozen=True)
class InFlight:
    """What one schedule has going when a pass plans its slots: ``waiting`` slots
    (``queued``, unsent), ``unsent`` slots claimed and not sent yet (a broker outage, a
    scheduler that died, another beat sending them now: the sweep sends them), the
    Celery task ids of its ``runs`` in flight (running, retrying, or sent recently and
    not started), and whether one of those was sent and has not started (``unstarted``:
    the broker still holds it)."""

    waiting: int = 0
    runs: tuple[str, ...] = ()
    unstarted: bool = False
    unsent: int = 0


@dataclass(frozen=True)
class Overlap(Generic[T]):
    """``apply_overlap``'s answer: the backlog, and the runs to cancel (Celery task ids)
    with the reason each cancelled run's row records."""

    backlog: Backlog[T]
    cancel: tuple[str, ...] = ()
    cancel_reason: str | None = None


def superseded_reason(newest: datetime, policy: MisfirePolicy) -> str:
    """Why an older slot of a backlog did not run (``missed``)."""
    return (
        f"missed: a newer slot of this schedule ({newest.isoformat()}) was sendable at the "
        f"same time, and misfire policy {policy.value} runs only the newest"
    )


def late_reason(late_seconds: float, grace_seconds: float, policy: MisfirePolicy) -> str:
    """Why a slot found later than its grace did not run (``missed``)."""
    rule = "runs no late slot" if policy is MisfirePolicy.SKIP else "runs only the newest"
    return (
        f"missed: found {late_seconds:.0f} s late, beyond the misfire grace of "
        f"{grace_seconds:.0f} s, and misfire policy {policy.value} {rule}"
    )


def buffer_full_reason(waiting: bool) -> str:
    """Why a slot was recorded ``skipped`` under ``buffer_one``."""
    already = "another slot already waits" if waiting else "an earlier slot of this pass waits"
    return (
        "skipped: overlap policy buffer_one lets one slot wait behind the run of this "
        f"schedule in flight, and the buffer is full ({already})"
    )


def cancelled_reason(slot: datetime) -> str:
    """Why a run was revoked under ``cancel_other``."""
    return (
        f"revoked: overlap policy cancel_other: slot {slot.isoformat()} of this schedule "
        "replaced this run"
    )


def apply_overlap(
    backlog: Backlog[datetime],
    *,
    policy: OverlapPolicy,
    in_flight: InFlight,
) -> Overlap[datetime]:
    """What ``policy`` does with a pass's ``backlog`` (already split by the misfire
    policy) given what the schedule has ``in_flight`` (see the module docstring).
    ``allow`` is also the policy of a task that takes no lock."""
    slots = [*backlog.send, *backlog.held]  # in slot order: held ones follow the sent one
    if not slots or policy is OverlapPolicy.ALLOW:
        return Overlap(backlog)
    busy = bool(in_flight.runs)
    if policy is OverlapPolicy.SKIP:
        if in_flight.waiting or in_flight.unstarted:
            return Overlap(replace(backlog, send=[], held=slots))
        return Overlap(backlog)
    if policy is OverlapPolicy.BUFFER_ONE:
        # slots claimed and not sent yet go before these: one of them runs next, and
        # one more may wait behind it
        ahead = in_flight.waiting + in_flight.unsent
        if not busy and not ahead:  # nothing going: one runs, one may wait
            send, held, rest = slots[:1], slots[1:2], slots[2:]
        else:
            room = max(0, (1 if busy else 2) - ahead)
            send, held, rest = [], slots[:room], slots[room:]
        reason = buffer_full_reason(bool(ahead))
        return Overlap(
            replace(
                backlog,
                send=send,
                held=held,
                skipped=[*backlog.skipped, *((slot, reason) for slot in rest)],
            )
        )
    # cancel_other: what is going is cancelled; the slots wait until it has ended
    if busy:
        return Overlap(
            replace(backlog, send=[], held=slots),
            cancel=in_flight.runs,
            cancel_reason=cancelled_reason(slots[-1]),
        )
    if in_flight.waiting or in_flight.unsent:
        return Overlap(replace(backlog, send=[], held=slots))
    return Overlap(backlog)


def split_backlog(
    slots: Sequence[T],
    *,
    when: Sequence[datetime],
    misfire: MisfirePolicy,
    overlap: OverlapPolicy,
) -> Backlog[T]:
    """Split one schedule's slots, oldest first (``when[i]`` is ``slots[i]``'s time),
    that a pass found sendable together (see the module docstring)."""
    if len(slots) <= 1 or overlap is OverlapPolicy.ALLOW:
        return Backlog(send=list(slots))
    if misfire is MisfirePolicy.CATCH_UP:
        return Backlog(send=[slots[0]], held=list(slots[1:]))
    reason = superseded_reason(when[-1], misfire)
    return Backlog(send=[slots[-1]], missed=[(slot, reason) for slot in slots[:-1]])


def sweep_schedule(
    unsent: Sequence[T],
    *,
    when: Sequence[datetime],
    newest_slot: datetime | None,
    in_flight: bool,
    misfire: MisfirePolicy,
    overlap: OverlapPolicy,
) -> Backlog[T]:
    """What the unsent sweep does with one schedule's unsent slots (stranded or
    ``queued``), oldest first. ``newest_slot``: the newest slot the schedule has any row
    for; ``in_flight``: another run of the schedule is going, or sent and not started,
    or being sent.

    ``allow`` sends them all. Otherwise nothing is sent while a run is in flight (it
    would race it for the lock); then ``catch_up`` sends the oldest, and
    ``run_once``/``skip`` the newest unless a newer slot already has a row. Under
    ``run_once``/``skip`` a slot a newer one overtook is recorded ``missed`` at once.
    Under ``buffer_one`` the slot that waited runs, oldest first, whatever newer slots
    were skipped meanwhile (the buffer holds it for exactly that).
    """
    if not unsent:
        return Backlog()
    if overlap is OverlapPolicy.ALLOW:
        return Backlog(send=list(unsent))
    if misfire is MisfirePolicy.CATCH_UP or overlap is OverlapPolicy.BUFFER_ONE:
        if in_flight:
            return Backlog(held=list(unsent))
        return Backlog(send=[unsent[0]], held=list(unsent[1:]))
    newest = when[-1] if newest_slot is None else max(newest_slot, when[-1])
    reason = superseded_reason(newest, misfire)
    if newest != when[-1]:  # a newer slot was claimed after all of these
        return Backlog(missed=[(slot, reason) for slot in unsent])
    missed = [(slot, reason) for slot in unsent[:-1]]
    if in_flight:
        return Backlog(held=[unsent[-1]], missed=missed)
    return Backlog(send=[unsent[-1]], missed=missed)
