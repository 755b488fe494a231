"""The CancelNotes contract, run against MemoryCancelNotes and RedisCancelNotes: why a
run was cancelled travels from its canceller to the worker that records it ``revoked``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from dataforge_scheduler.core.ports import CANCEL_NOTE_TTL_SECONDS, Backend, CancelNotes
from dataforge_scheduler.redis.cancels import RedisCancelNotes
from dataforge_scheduler.redis.keys import Keys


@pytest.fixture
def cancels(family: Backend) -> CancelNotes:
    return family.cancels


def _run_id() -> str:
    return str(uuid.uuid4())


def test_a_noted_reason_can_be_read_by_every_process_that_records_the_end(
    cancels: CancelNotes,
) -> None:
    run = _run_id()
    reason = "revoked: overlap policy cancel_other: slot X replaced this run"
    cancels.note(run, reason)
    for _ in range(2):  # the pool process and the worker's main process
        assert cancels.reason(run) == reason


def test_an_unknown_run_has_no_reason(cancels: CancelNotes) -> None:
    assert cancels.reason(_run_id()) is None


def test_notes_are_per_run_and_the_last_one_counts(cancels: CancelNotes) -> None:
    first, second = _run_id(), _run_id()
    cancels.note(first, "one")
    cancels.note(first, "again")
    cancels.note(second, "two")
    assert (cancels.reason(second), cancels.reason(first)) == ("two", "again")


def test_a_reason_comes_back_exactly_as_noted(cancels: CancelNotes) -> None:
    run = _run_id()
    reason = "已取消：运维人员 张三 手动停止 (schedule « nightly » ✓)"
    cancels.note(run, reason)
    assert cancels.reason(run) == reason


def test_a_note_outlives_a_short_wait_and_expires_after_its_ttl(
    cancels: CancelNotes, backend: str, let_time_pass: Callable[..., None]
) -> None:
    run = _run_id()
    cancels.note(run, "kept")
    if backend == "memory":
        let_time_pass(CANCEL_NOTE_TTL_SECONDS - 1, until=lambda: True)
        cancels.note(_run_id(), "another")  # noting another does not evict a live one
        assert cancels.reason(run) == "kept"
        cancels.note(run, "expires")
        let_time_pass(CANCEL_NOTE_TTL_SECONDS + 1, until=lambda: True)
        assert cancels.reason(run) is None


@pytest.mark.redis
def test_redis_keeps_a_note_for_its_ttl_under_the_key_prefix(
    redis_url: str, redis_client: Any, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    notes = RedisCancelNotes(redis_client, keys)
    run = _run_id()
    notes.note(run, "why")
    ttl = redis_client.ttl(keys.cancel(run))
    assert CANCEL_NOTE_TTL_SECONDS - 5 <= ttl <= CANCEL_NOTE_TTL_SECONDS
    assert notes.reason(run) == "why"
