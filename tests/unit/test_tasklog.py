"""task_log() and the log buffer: batching, size cap, echo, context binding, never raising."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from dataforge_scheduler.celery.logbuffer import (
    LogBuffer,
    LogFlusher,
)
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.core.context import RunContext, bind_run, current_run, reset_run
from dataforge_scheduler.core.values import capped_log_text, truncation_marker
from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.memory.logbus import MemoryLogBus


class CountingBus(MemoryLogBus):
    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.appends: list[list[str]] = []
        self.fail = fail

    def append(self, execution_id: int, lines: Sequence[str]) -> int:
        if self.fail:
            raise BackendUnavailable("Redis is unavailable while appending")
        self.appends.append(list(lines))
        return super().append(execution_id, lines)


def _buffer(bus: MemoryLogBus, **overrides: Any) -> LogBuffer:
    values: dict[str, Any] = {"flush_lines": 100, "max_bytes": 1_000_000}
    values.update(overrides)
    return LogBuffer(bus, "run-7", **values)


@pytest.fixture
def run_with_log() -> Iterator[tuple[RunContext, LogBuffer, CountingBus]]:
    bus = CountingBus()
    buffer = _buffer(bus)
    run = RunContext(
        celery_task_id="task-1",
        task_name="t",
        execution_id=7,
        scheduled_task_id=None,
        retries=0,
        runtime=None,
        log=buffer,
        echo=False,
    )
    token = bind_run(run)
    yield run, buffer, bus
    reset_run(token)


# ---------------------------------------------------------------- buffer


def test_lines_are_pushed_in_one_round_trip_when_the_batch_is_full() -> None:
    bus = CountingBus()
    buffer = _buffer(bus, flush_lines=3)
    buffer.write(["a", "b"])
    assert bus.appends == []
    buffer.write(["c"])
    assert bus.appends == [["a", "b", "c"]]
    buffer.write(["d"])
    assert buffer.close() == "a\nb\nc\nd"
    assert bus.appends == [["a", "b", "c"], ["d"]]
    assert [line.text for line in bus.read("run-7")] == ["a", "b", "c", "d"]


def test_a_closed_buffer_takes_no_more_lines() -> None:
    bus = CountingBus()
    buffer = _buffer(bus)
    buffer.close()
    buffer.write(["late"])
    buffer.flush()
    assert bus.appends == []
    assert buffer.text() is None


def test_the_flusher_pushes_waiting_lines_of_every_registered_buffer() -> None:
    bus = CountingBus()
    flusher = LogFlusher(interval=3600)  # the thread never wakes on its own here
    first = LogBuffer(bus, "r1", flush_lines=100, max_bytes=1000, flusher=flusher)
    second = LogBuffer(bus, "r2", flush_lines=100, max_bytes=1000, flusher=flusher)
    first.write(["one"])
    second.write(["two", "three"])
    assert flusher.run_once() == 2
    assert bus.length("r1") == 1
    assert bus.length("r2") == 2
    assert flusher.run_once() == 0
    first.close()
    second.close()
    second_run = LogBuffer(bus, "r3", flush_lines=100, max_bytes=1000, flusher=flusher)
    second_run.write(["x"])
    assert flusher.run_once() == 1  # closed buffers left the flusher
    second_run.close()


def test_the_flusher_thread_flushes_on_its_timer() -> None:
    bus = CountingBus()
    flusher = LogFlusher(interval=0.01)
    buffer = LogBuffer(bus, "r1", flush_lines=100, max_bytes=1000, flusher=flusher)
    with bus.subscribe("r1") as subscription:
        buffer.write(["tick"])  # below flush_lines: only the timer can push it
        event = subscription.get(timeout=5)
    assert event is not None
    assert getattr(event, "text", None) == "tick"
    buffer.close()


def test_a_long_log_is_cut_with_a_visible_marker() -> None:
    bus = CountingBus()
    buffer = _buffer(bus, max_bytes=12)
    buffer.write(["12345", "67890", "abcdef", "ghi"])  # 6 + 6 bytes fit; 7 + 4 do not
    text = buffer.close()
    assert text == f"12345\n67890\n{truncation_marker(11)}"
    live = [line.text for line in bus.read("run-7")]
    assert live[:2] == ["12345", "67890"]
    assert live[2].startswith("… [log truncated")
    assert len(live) == 3, "past the cap nothing more is pushed"


def test_capped_log_text_matches_the_buffer() -> None:
    assert capped_log_text([], max_bytes=10) is None
    assert capped_log_text(["ab", "cd"], max_bytes=10) == "ab\ncd"
    assert capped_log_text(["abcdefghij"], max_bytes=5) == truncation_marker(11)


def test_a_failing_bus_never_reaches_the_task_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = CountingBus(fail=True)
    buffer = _buffer(bus, flush_lines=1)
    with caplog.at_level(logging.DEBUG, logger="dataforge_scheduler.celery.logbuffer"):
        buffer.write(["one"])
        buffer.write(["two"])
        text = buffer.close()
    assert text == "one\ntwo"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "run run-7" in errors[0].getMessage()


# ---------------------------------------------------------------- task_log


def test_task_log_joins_like_print_and_splits_lines(
    run_with_log: tuple[RunContext, LogBuffer, CountingBus],
) -> None:
    _, buffer, _ = run_with_log
    task_log("synced", 10, "accounts", print_console=False)
    task_log("a", "b", sep="-", print_console=False)
    task_log("two\nlines", print_console=False)
    assert buffer.close() == "synced 10 accounts\na-b\ntwo\nlines"


def test_echo_follows_the_setting_unless_forced(
    run_with_log: tuple[RunContext, LogBuffer, CountingBus], capsys: pytest.CaptureFixture[str]
) -> None:
    task_log("quiet")  # the run's echo setting is off
    task_log("loud", print_console=True)
    out = capsys.readouterr().out
    assert "quiet" not in out
    assert "[task-1] loud" in out


def test_outside_a_run_task_log_uses_logging(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    assert current_run() is None
    with caplog.at_level(logging.INFO, logger="dataforge_scheduler.task_log"):
        task_log("no run here", 1)
        task_log("and printed", print_console=True)
    assert [r.getMessage() for r in caplog.records] == ["no run here 1", "and printed"]
    assert capsys.readouterr().out == "and printed\n"


def test_task_log_never_raises(
    run_with_log: tuple[RunContext, LogBuffer, CountingBus], caplog: pytest.LogCaptureFixture
) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    with caplog.at_level(logging.ERROR, logger="dataforge_scheduler.task_log"):
        task_log(Unprintable())
    assert any("could not record" in r.getMessage() for r in caplog.records)


def test_the_run_follows_asyncio_and_to_thread_but_not_plain_threads(
    run_with_log: tuple[RunContext, LogBuffer, CountingBus], caplog: pytest.LogCaptureFixture
) -> None:
    _, buffer, _ = run_with_log

    async def body() -> None:
        task_log("in the coroutine", print_console=False)
        await asyncio.create_task(_spawned())
        await asyncio.to_thread(task_log, "in to_thread", print_console=False)

    asyncio.run(body())
    copied = threading.Thread(
        target=contextvars.copy_context().run, args=(task_log, "in a copied context")
    )
    copied.start()
    copied.join()
    with caplog.at_level(logging.INFO, logger="dataforge_scheduler.task_log"):
        plain = threading.Thread(target=task_log, args=("in a plain thread",))
        plain.start()
        plain.join()

    assert buffer.close() == (
        "in the coroutine\nin a spawned task\nin to_thread\nin a copied context"
    )
    assert [r.getMessage() for r in caplog.records] == ["in a plain thread"]


async def _spawned() -> None:
    task_log("in a spawned task", print_console=False)


def test_reset_restores_the_previous_run(
    run_with_log: tuple[RunContext, LogBuffer, CountingBus],
) -> None:
    outer, _, _ = run_with_log
    inner = RunContext(
        celery_task_id="task-2",
        task_name="t",
        execution_id=None,
        scheduled_task_id=None,
        retries=0,
        runtime=None,
        log=None,
        echo=False,
    )
    token = bind_run(inner)
    assert current_run() is inner
    assert inner.state.token is token
    reset_run(token)
    assert current_run() is outer
