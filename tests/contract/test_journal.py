"""The RunJournal contract (a run's start and end in one step each, and the history
outbox), run against MemoryRunJournal and RedisRunJournal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.journal import (
    FinishRecord,
    LockEnd,
    LockEndAction,
    LockRequest,
    StartRecord,
)
from dataforge_scheduler.core.ports import Backend, LockManager, LogBus, RunJournal
from dataforge_scheduler.core.values import LockInfo, LockOwner, LogLine

TimePasser = Callable[..., None]
AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SCOPE = "task:7"
STATE_TTL = 60.0
LOG_TTL = 30.0


def _start(run: str = "c-1", *, retries: int = 0, redelivered: bool = False) -> StartRecord:
    return StartRecord(
        celery_task_id=run,
        task_name="app.sync",
        scheduled_task_id=7,
        trigger="schedule",
        worker_hostname="w1",
        worker_pid=11,
        kwargs={"scheduled_task_id": 7, "名": "值"},
        retries=retries,
        at=AT,
        redelivered=redelivered,
    )


def _finish(
    run: str = "c-1", status: ExecutionStatus = ExecutionStatus.SUCCESS, attempt: int | None = 0
) -> FinishRecord:
    return FinishRecord(
        celery_task_id=run,
        status=status,
        at=AT + timedelta(seconds=2),
        result={"n": 1},
        attempt=attempt,
        log="one\ntwo",
    )


def _lock(run: str = "c-1") -> LockRequest:
    return LockRequest(SCOPE, LockOwner(celery_task_id=run, hostname="w1", pid=11), ttl=30)


def _end(journal: RunJournal, record: FinishRecord, **kwargs: Any) -> bool:
    kwargs.setdefault("log_lines", [])
    kwargs.setdefault("lock", None)
    return journal.finish(record, log_ttl=LOG_TTL, state_ttl=STATE_TTL, **kwargs)


def _drain(journal: RunJournal, consumer: str = "w1") -> list[Any]:
    entries = journal.read(consumer, count=100, block=0)
    journal.ack(entries)
    return [entry.record for entry in entries]


# ---------------------------------------------------------------- records in order


def test_a_start_and_its_end_are_read_in_order_then_acknowledged_away(
    journal: RunJournal,
) -> None:
    assert journal.start(_start(), lock=None, state_ttl=STATE_TTL).duplicate is False
    _end(journal, _finish())

    entries = journal.read("w1", count=10, block=0)
    assert [entry.record for entry in entries] == [_start(), _finish()]
    assert journal.stats().length == 2
    assert journal.stats().in_flight == 2
    assert journal.undrained(["c-1", "other"]) == {"c-1"}

    journal.ack(entries)
    assert journal.stats().length == 0
    assert journal.stats().oldest_age_seconds is None
    assert journal.undrained(["c-1"]) == set()
    journal.ack(entries)  # idempotent
    assert journal.read("w1", count=10, block=0) == []


def test_read_hands_each_record_to_one_consumer_and_pending_returns_it(
    journal: RunJournal,
) -> None:
    journal.start(_start("a"), lock=None, state_ttl=STATE_TTL)
    journal.start(_start("b"), lock=None, state_ttl=STATE_TTL)
    first = journal.read("w1", count=1, block=0)
    second = journal.read("w2", count=10, block=0)
    assert [e.record.celery_task_id for e in first] == ["a"]
    assert [e.record.celery_task_id for e in second] == ["b"]
    assert journal.pending("w1", count=10) == first
    assert journal.pending("w2", count=10) == second
    journal.ack(first + second)
    assert journal.pending("w1", count=10) == []


def test_read_waits_for_a_record_up_to_its_block(journal: RunJournal) -> None:
    found: list[Any] = []
    reader = threading.Thread(
        target=lambda: found.extend(journal.read("w1", count=10, block=5.0)), daemon=True
    )
    reader.start()
    time.sleep(0.1)  # the reader is blocked now; the record arrives after it began waiting
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    reader.join(5.0)
    assert [entry.record for entry in found] == [_start()]


def test_a_writer_claims_what_a_stopped_writer_left(
    journal: RunJournal, let_time_pass: TimePasser
) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    held = journal.read("dead", count=10, block=0)
    assert journal.claim("alive", idle=60, count=10) == []  # not idle long enough

    claimed: list[Any] = []
    let_time_pass(
        0.2,
        until=lambda: bool(claimed.extend(journal.claim("alive", idle=0.1, count=10)) or claimed),
    )
    assert claimed == held
    assert journal.pending("alive", count=10) == held
    assert journal.pending("dead", count=10) == []
    journal.ack(claimed)
    assert journal.stats().length == 0


def test_a_rejected_record_is_set_aside_and_acknowledged(journal: RunJournal) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    [entry] = journal.read("w1", count=10, block=0)
    journal.reject(entry, "the database refused it for good")
    assert journal.stats().length == 0
    assert journal.undrained(["c-1"]) == set()


def test_stats_age_the_oldest_waiting_record(
    journal: RunJournal, let_time_pass: TimePasser
) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    let_time_pass(0.3, until=lambda: (journal.stats().oldest_age_seconds or 0.0) >= 0.3)
    stats = journal.stats()
    assert stats.length == 1
    assert stats.in_flight == 0


# ---------------------------------------------------------------- who may start


def test_a_duplicate_delivery_records_nothing_and_takes_no_lock(
    journal: RunJournal, locks: LockManager
) -> None:
    assert journal.start(_start(), lock=_lock(), state_ttl=STATE_TTL).acquired is not None
    again = journal.start(_start(), lock=_lock("intruder"), state_ttl=STATE_TTL)
    assert again.duplicate
    assert again.acquired is None
    assert again.holder is None
    assert _drain(journal) == [_start()]
    held = locks.get(SCOPE)
    assert held is not None
    assert held.celery_task_id == "c-1"


def test_a_finished_run_is_never_started_again(journal: RunJournal) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    _end(journal, _finish())
    assert journal.start(_start(), lock=None, state_ttl=STATE_TTL).duplicate
    assert journal.start(_start(redelivered=True), lock=None, state_ttl=STATE_TTL).duplicate


def test_a_retry_starts_the_attempt_it_waits_for_only(journal: RunJournal) -> None:
    journal.start(_start(retries=0), lock=None, state_ttl=STATE_TTL)
    _end(journal, _finish(status=ExecutionStatus.RETRYING, attempt=0))
    assert journal.start(_start(retries=0), lock=None, state_ttl=STATE_TTL).duplicate
    assert journal.start(_start(retries=2), lock=None, state_ttl=STATE_TTL).duplicate
    assert not journal.start(_start(retries=1), lock=None, state_ttl=STATE_TTL).duplicate


def test_a_later_attempt_overtakes_and_a_late_end_of_the_earlier_one_changes_nothing(
    journal: RunJournal,
) -> None:
    journal.start(_start(retries=0), lock=None, state_ttl=STATE_TTL)
    # Celery publishes the retry before attempt 0 ends: attempt 1 starts first
    assert not journal.start(_start(retries=1), lock=None, state_ttl=STATE_TTL).duplicate
    _end(journal, _finish(status=ExecutionStatus.RETRYING, attempt=0))  # late
    assert journal.start(_start(retries=1), lock=None, state_ttl=STATE_TTL).duplicate
    _end(journal, _finish(attempt=0))  # nor does a late final end of attempt 0
    assert journal.start(_start(retries=1), lock=None, state_ttl=STATE_TTL).duplicate
    assert not journal.start(_start(retries=1, redelivered=True), lock=None, state_ttl=60).duplicate


def test_a_redelivery_after_a_lost_worker_restarts_the_same_attempt(
    journal: RunJournal,
) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    assert journal.start(_start(), lock=None, state_ttl=STATE_TTL).duplicate
    assert not journal.start(_start(redelivered=True), lock=None, state_ttl=STATE_TTL).duplicate


def test_what_a_run_knows_of_itself_expires_after_the_state_ttl(
    journal: RunJournal, let_time_pass: TimePasser
) -> None:
    journal.start(_start(), lock=None, state_ttl=0.1)
    assert journal.start(_start(), lock=None, state_ttl=0.1).duplicate  # known until then
    let_time_pass(
        0.1,
        until=lambda: not journal.start(_start(), lock=None, state_ttl=60).duplicate,
    )


@pytest.fixture
def wait(backend: str, clock: ManualClock) -> Callable[[float], None]:
    """Let ``seconds`` pass: the manual clock for memory, real time for Redis's TTLs."""

    def wait(seconds: float) -> None:
        if backend == "memory":
            clock.advance(seconds)
        else:
            time.sleep(seconds)

    return wait


def test_a_done_run_keeps_its_state_for_the_done_ttl_only_once_applied(
    journal: RunJournal, wait: Callable[[float], None], let_time_pass: TimePasser
) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    _end(journal, _finish(), done_ttl=0.1)
    wait(0.3)  # its records wait in the outbox: the state outlives the done ttl
    assert journal.undrained(["c-1"]) == {"c-1"}
    assert journal.start(_start(), lock=None, state_ttl=STATE_TTL).duplicate
    assert len(_drain(journal)) == 2
    let_time_pass(
        0.1,
        until=lambda: not journal.start(_start(), lock=None, state_ttl=STATE_TTL).duplicate,
    )


def test_without_a_done_ttl_a_done_run_keeps_its_state_for_the_state_ttl(
    journal: RunJournal, wait: Callable[[float], None]
) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    _end(journal, _finish())
    _drain(journal)
    wait(0.3)
    assert journal.start(_start(), lock=None, state_ttl=STATE_TTL).duplicate


def test_a_retrying_end_does_not_shorten_the_state(
    journal: RunJournal, wait: Callable[[float], None]
) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    _end(journal, _finish(status=ExecutionStatus.RETRYING, attempt=0), done_ttl=0.1)
    _drain(journal)
    wait(0.3)
    # the state still waits for attempt 1: attempt 0 again is a duplicate
    assert journal.start(_start(retries=0), lock=None, state_ttl=STATE_TTL).duplicate


# ---------------------------------------------------------------- the lock


def test_a_start_takes_the_lock_and_reenters_it_for_its_own_retry(
    journal: RunJournal, locks: LockManager
) -> None:
    first = journal.start(_start(), lock=_lock(), state_ttl=STATE_TTL)
    assert first.acquired is not None
    assert first.acquired.reentered is False
    _end(journal, _finish(status=ExecutionStatus.RETRYING, attempt=0))
    retry = journal.start(_start(retries=1), lock=_lock(), state_ttl=STATE_TTL)
    assert retry.acquired is not None
    assert retry.acquired.token == first.acquired.token
    assert retry.acquired.reentered is True
    held = locks.get(SCOPE)
    assert held is not None
    assert (held.hostname, held.pid) == ("w1", 11)
    assert [info.token for info in locks.list()] == [first.acquired.token]


def test_a_lock_held_by_another_run_is_reported_and_the_start_still_recorded(
    journal: RunJournal, locks: LockManager
) -> None:
    locks.acquire(SCOPE, LockOwner(celery_task_id="other", hostname="w9", pid=9), ttl=30)
    outcome = journal.start(_start(), lock=_lock(), state_ttl=STATE_TTL)
    assert outcome.acquired is None
    assert isinstance(outcome.holder, LockInfo)
    assert (outcome.holder.celery_task_id, outcome.holder.pid) == ("other", 9)
    assert _drain(journal) == [_start()]


def test_the_end_releases_only_a_lock_its_token_still_holds(
    journal: RunJournal, locks: LockManager
) -> None:
    taken = journal.start(_start(), lock=_lock(), state_ttl=STATE_TTL).acquired
    assert taken is not None
    release = LockEnd(SCOPE, LockEndAction.RELEASE, "not-the-token")
    assert _end(journal, _finish(), lock=release) is False
    assert locks.get(SCOPE) is not None
    journal.start(_start("c-2"), lock=None, state_ttl=STATE_TTL)
    assert [info.token for info in locks.list()] == [taken.token]
    release = LockEnd(SCOPE, LockEndAction.RELEASE, taken.token)
    assert _end(journal, _finish("c-2"), lock=release) is True
    assert locks.get(SCOPE) is None
    assert locks.list() == []


def test_a_retrying_end_extends_the_lock_past_the_countdown(
    journal: RunJournal, locks: LockManager
) -> None:
    taken = journal.start(_start(), lock=_lock(), state_ttl=STATE_TTL).acquired
    assert taken is not None
    extend = LockEnd(SCOPE, LockEndAction.EXTEND, taken.token, ttl=300)
    assert _end(journal, _finish(status=ExecutionStatus.RETRYING, attempt=0), lock=extend)
    held = locks.get(SCOPE)
    assert held is not None
    assert held.ttl_seconds is not None
    assert 250 < held.ttl_seconds <= 300
    assert [info.scope for info in locks.list()] == [SCOPE]


def test_an_end_seen_from_outside_releases_by_celery_task_id(
    journal: RunJournal, locks: LockManager
) -> None:
    journal.start(_start(), lock=_lock(), state_ttl=STATE_TTL)
    lost = _finish(status=ExecutionStatus.LOST, attempt=None)
    assert _end(journal, lost, lock=LockEnd(SCOPE, LockEndAction.RELEASE_FOR_TASK, "c-1"))
    assert locks.get(SCOPE) is None


# ---------------------------------------------------------------- the log


def test_the_end_pushes_the_last_lines_and_ends_the_live_log(
    journal: RunJournal, logbus: LogBus
) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    logbus.append("c-1", ["early"])
    with logbus.subscribe("c-1") as live:
        _end(journal, _finish(), log_lines=["late 1", "late 2"])
        events = [live.get(5.0) for _ in range(3)]
    assert logbus.read("c-1") == [LogLine(0, "early"), LogLine(1, "late 1"), LogLine(2, "late 2")]
    assert [getattr(e, "text", None) for e in events[:2]] == ["late 1", "late 2"]
    assert getattr(events[2], "status", None) == "success"
    assert logbus.ended("c-1") == "success"


def test_a_retrying_end_keeps_the_log_open(journal: RunJournal, logbus: LogBus) -> None:
    journal.start(_start(), lock=None, state_ttl=STATE_TTL)
    _end(journal, _finish(status=ExecutionStatus.RETRYING, attempt=0), log_lines=["retry"])
    assert [line.text for line in logbus.read("c-1")] == ["retry"]
    assert logbus.ended("c-1") is None


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def journal(family: Backend) -> RunJournal:
    return family.journal


def test_the_backend_gives_one_journal(family: Backend) -> None:
    assert family.journal is family.journal
