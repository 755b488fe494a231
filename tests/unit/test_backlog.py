"""A schedule's own backlog never races itself: the pure rules of ``core.backlog``, and
the database-time clock a real beat reads through its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dataforge_scheduler.core.backlog import (
    Backlog,
    InFlight,
    apply_overlap,
    split_backlog,
    sweep_schedule,
)
from dataforge_scheduler.core.clock import ServerClock, utcnow
from dataforge_scheduler.core.enums import MisfirePolicy, OverlapPolicy

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
WHEN = [T0 + timedelta(seconds=k) for k in range(4)]
SLOTS = ["s0", "s1", "s2", "s3"]


@pytest.mark.parametrize("misfire", [MisfirePolicy.RUN_ONCE, MisfirePolicy.SKIP])
def test_a_backlog_runs_its_newest_slot_and_says_why_the_others_did_not(
    misfire: MisfirePolicy,
) -> None:
    backlog = split_backlog(SLOTS, when=WHEN, misfire=misfire, overlap=OverlapPolicy.SKIP)
    assert backlog.send == ["s3"]
    assert [slot for slot, _ in backlog.missed] == ["s0", "s1", "s2"]
    assert all(WHEN[-1].isoformat() in reason for _, reason in backlog.missed)
    assert all(misfire.value in reason for _, reason in backlog.missed)


def test_a_catch_up_backlog_sends_the_oldest_and_holds_the_rest() -> None:
    backlog = split_backlog(
        SLOTS, when=WHEN, misfire=MisfirePolicy.CATCH_UP, overlap=OverlapPolicy.SKIP
    )
    assert (backlog.send, backlog.held, backlog.missed) == (["s0"], ["s1", "s2", "s3"], [])


@pytest.mark.parametrize("misfire", list(MisfirePolicy))
def test_without_a_lock_a_backlog_goes_at_once(misfire: MisfirePolicy) -> None:
    backlog = split_backlog(SLOTS, when=WHEN, misfire=misfire, overlap=OverlapPolicy.ALLOW)
    assert backlog.send == SLOTS


def test_one_slot_is_no_backlog() -> None:
    backlog = split_backlog(
        ["s"], when=WHEN[:1], misfire=MisfirePolicy.RUN_ONCE, overlap=OverlapPolicy.SKIP
    )
    assert (backlog.send, backlog.missed) == (["s"], [])


def test_the_sweep_sends_a_stranded_slot_nothing_has_overtaken_once_nothing_is_in_flight() -> None:
    kwargs = {
        "when": WHEN[1:2],
        "newest_slot": WHEN[1],
        "misfire": MisfirePolicy.RUN_ONCE,
        "overlap": OverlapPolicy.SKIP,
    }
    # an older run going, or sent and not started: sent now, it would race it
    busy = sweep_schedule(["s1"], in_flight=True, **kwargs)  # type: ignore[arg-type]
    assert (busy.send, busy.held, busy.missed) == ([], ["s1"], [])
    free = sweep_schedule(["s1"], in_flight=False, **kwargs)  # type: ignore[arg-type]
    assert (free.send, free.missed) == (["s1"], [])


def test_the_sweep_records_a_stranded_slot_a_newer_one_overtook_as_missed() -> None:
    decided = sweep_schedule(
        ["s1"],
        when=WHEN[1:2],
        newest_slot=WHEN[2],
        in_flight=False,
        misfire=MisfirePolicy.RUN_ONCE,
        overlap=OverlapPolicy.SKIP,
    )
    assert decided.send == []
    [(slot, reason)] = decided.missed
    assert slot == "s1"
    assert WHEN[2].isoformat() in reason


def test_the_sweep_sends_a_catch_up_backlog_one_at_a_time_when_nothing_is_in_flight() -> None:
    kwargs = {
        "when": WHEN[1:],
        "newest_slot": WHEN[3],
        "misfire": MisfirePolicy.CATCH_UP,
        "overlap": OverlapPolicy.SKIP,
    }
    busy = sweep_schedule(["s1", "s2", "s3"], in_flight=True, **kwargs)  # type: ignore[arg-type]
    assert (busy.send, busy.held) == ([], ["s1", "s2", "s3"])
    free = sweep_schedule(["s1", "s2", "s3"], in_flight=False, **kwargs)  # type: ignore[arg-type]
    assert (free.send, free.held, free.missed) == (["s1"], ["s2", "s3"], [])


def test_the_server_clock_reads_the_server_time_through_this_hosts_clock() -> None:
    clock = ServerClock()
    assert abs(clock.now() - utcnow()) < timedelta(seconds=1)  # nothing observed yet
    asked = utcnow()
    answered = asked + timedelta(milliseconds=2)
    clock.observe(
        asked + timedelta(seconds=15, milliseconds=1), asked_at=asked, answered_at=answered
    )
    assert clock.offset == timedelta(seconds=15)
    assert abs(clock.now() - (utcnow() + timedelta(seconds=15))) < timedelta(seconds=1)


# ---------------------------------------------------------------- overlap policies


def test_buffer_one_says_why_a_slot_was_skipped() -> None:
    decided = apply_overlap(
        Backlog(send=[T0]),
        policy=OverlapPolicy.BUFFER_ONE,
        in_flight=InFlight(waiting=1, runs=("going",)),
    )
    assert decided.backlog.send == []
    assert decided.backlog.held == []
    [(slot, reason)] = decided.backlog.skipped
    assert slot == T0
    assert reason.startswith("skipped: ")
    assert "buffer_one" in reason
    assert "buffer is full" in reason
    assert decided.cancel == ()


def test_a_policy_keeps_the_misfire_policys_missed_slots() -> None:
    missed = [(T0 - timedelta(minutes=1), "missed: late")]
    for policy in OverlapPolicy:
        decided = apply_overlap(
            Backlog(send=[T0], missed=missed),
            policy=policy,
            in_flight=InFlight(runs=("going",)),
        )
        assert decided.backlog.missed == missed


def test_cancel_other_behind_waiting_slots_cancels_nothing() -> None:
    decided = apply_overlap(
        Backlog(send=[T0]), policy=OverlapPolicy.CANCEL_OTHER, in_flight=InFlight(waiting=1)
    )
    assert (decided.backlog.send, decided.backlog.held, decided.cancel) == ([], [T0], ())


def test_allow_ignores_what_is_in_flight() -> None:
    decided = apply_overlap(
        Backlog(send=[T0]),
        policy=OverlapPolicy.ALLOW,
        in_flight=InFlight(waiting=3, runs=("going",), unstarted=True),
    )
    assert decided.backlog == Backlog(send=[T0])
    assert decided.cancel == ()


def test_buffer_one_lets_a_slot_wait_behind_one_about_to_be_sent() -> None:
    # the run ended and the sweep has not sent the waiting slot yet: the new slot waits
    # behind it instead of being skipped for a run that is not going
    decided = apply_overlap(
        Backlog(send=[T0]), policy=OverlapPolicy.BUFFER_ONE, in_flight=InFlight(waiting=1)
    )
    assert (decided.backlog.held, decided.backlog.skipped) == ([T0], [])
    two_ahead = apply_overlap(
        Backlog(send=[T0]), policy=OverlapPolicy.BUFFER_ONE, in_flight=InFlight(waiting=2)
    )
    assert [slot for slot, _ in two_ahead.backlog.skipped] == [T0]


def test_buffer_one_counts_slots_claimed_and_not_sent_as_ahead_of_it() -> None:
    # a broker outage strands claimed slots: they go first, and the buffer stays one deep
    one_unsent = apply_overlap(
        Backlog(send=[T0]), policy=OverlapPolicy.BUFFER_ONE, in_flight=InFlight(unsent=1)
    )
    assert one_unsent.backlog.held == [T0]
    behind_a_run = apply_overlap(
        Backlog(send=[T0]),
        policy=OverlapPolicy.BUFFER_ONE,
        in_flight=InFlight(unsent=1, runs=("going",)),
    )
    assert [slot for slot, _ in behind_a_run.backlog.skipped] == [T0]
