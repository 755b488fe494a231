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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from dataforge_scheduler.core.enums import MisfirePolicy, OverlapPolicy

__all__ = ["Backlog", "late_reason", "split_backlog", "superseded_reason", "sweep_schedule"]

T = TypeVar("T")


@dataclass(frozen=True)
class Backlog(Generic[T]):
    """What to do with a schedule's slots: ``send`` now, keep ``held`` (unsent, sent later
    one at a time) and record ``missed`` (each with its reason)."""

    send: list[T] = field(default_factory=list)
    held: list[T] = field(default_factory=list)
    missed: list[tuple[T, str]] = field(default_factory=list)


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
    """
    if not unsent:
        return Backlog()
    if overlap is OverlapPolicy.ALLOW:
        return Backlog(send=list(unsent))
    if misfire is MisfirePolicy.CATCH_UP:
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
