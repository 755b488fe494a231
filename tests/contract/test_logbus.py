"""The LogBus contract, run against MemoryLogBus and RedisLogBus."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from dataforge_scheduler.core.ports import LogBus, LogEnd, LogLine, LogSubscription
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.redis.keys import Keys, decode_live_message
from dataforge_scheduler.redis.logbus import RedisLogBus

TimePasser = Callable[..., None]
RUN = "c41-run"
WAIT = 5.0


def _drain(subscription: LogSubscription, count: int) -> list[LogLine | LogEnd]:
    """Exactly ``count`` events, each within WAIT seconds."""
    events: list[LogLine | LogEnd] = []
    for _ in range(count):
        event = subscription.get(WAIT)
        assert event is not None, f"only {len(events)} of {count} events arrived"
        events.append(event)
    return events


def test_append_numbers_lines_in_order(logbus: LogBus) -> None:
    assert logbus.append(RUN, ["one", "two"]) == 2
    assert logbus.append(RUN, ["three"]) == 3

    assert logbus.read(RUN) == [LogLine(0, "one"), LogLine(1, "two"), LogLine(2, "three")]
    assert logbus.length(RUN) == 3


def test_read_from_an_offset(logbus: LogBus) -> None:
    logbus.append(RUN, [f"line {n}" for n in range(10)])

    assert logbus.read(RUN, 7) == [LogLine(7, "line 7"), LogLine(8, "line 8"), LogLine(9, "line 9")]
    assert logbus.read(RUN, 10) == []
    assert logbus.read(RUN, 99) == []
    with pytest.raises(ConfigurationError, match="start"):
        logbus.read(RUN, -1)


def test_an_unknown_run_is_empty(logbus: LogBus) -> None:
    assert logbus.read("c404") == []
    assert logbus.length("c404") == 0
    assert logbus.ended("c404") is None


def test_an_empty_batch_changes_nothing(logbus: LogBus) -> None:
    assert logbus.append(RUN, []) == 0
    logbus.append(RUN, ["a"])

    assert logbus.append(RUN, []) == 1


def test_a_single_str_is_refused(logbus: LogBus) -> None:
    with pytest.raises(TypeError):
        logbus.append(RUN, "not a list")
    assert logbus.length(RUN) == 0


def test_runs_are_separate(logbus: LogBus) -> None:
    with logbus.subscribe("run-1") as first:
        logbus.append("run-2", ["for run two"])
        logbus.append("run-1", ["for run one"])

        assert first.get(WAIT) == LogLine(0, "for run one")
    assert logbus.read("run-2") == [LogLine(0, "for run two")]


def test_subscriber_gets_live_lines_then_the_end(logbus: LogBus) -> None:
    logbus.append(RUN, ["before subscribing"])
    with logbus.subscribe(RUN) as subscription:
        logbus.append(RUN, ["live 1", "live 2"])
        logbus.finish(RUN, "success", ttl=60)

        events = _drain(subscription, 3)
        assert events == [LogLine(1, "live 1"), LogLine(2, "live 2"), LogEnd("success")]
        assert subscription.get(0.05) is None


def test_a_closed_subscription_gets_nothing(logbus: LogBus) -> None:
    subscription = logbus.subscribe(RUN)
    subscription.close()
    subscription.close()

    logbus.append(RUN, ["after close"])

    assert subscription.get(0.05) is None


def test_concurrent_appenders_get_unique_dense_seqs(logbus: LogBus) -> None:
    threads_n, batches, per_batch = 4, 25, 4
    total = threads_n * batches * per_batch
    lengths: list[int] = []
    barrier = threading.Barrier(threads_n)

    def writer(t: int) -> None:
        barrier.wait()
        for b in range(batches):
            batch = [f"t{t}-b{b}-{i}" for i in range(per_batch)]
            lengths.append(logbus.append(RUN, batch))

    with logbus.subscribe(RUN) as subscription:
        threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        live = _drain(subscription, total)

    stored = logbus.read(RUN)
    assert [line.seq for line in stored] == list(range(total))
    assert live == stored, "live order and text must equal the stored log"
    assert sorted(lengths) == list(range(per_batch, total + 1, per_batch))
    for end in lengths:  # each batch is contiguous: its lines end at the returned length
        batch = [line.text for line in stored[end - per_batch : end]]
        prefix = batch[0].rsplit("-", 1)[0]
        assert batch == [f"{prefix}-{i}" for i in range(per_batch)]
    for t in range(threads_n):
        mine = [line.text for line in stored if line.text.startswith(f"t{t}-")]
        assert mine == [f"t{t}-b{b}-{i}" for b in range(batches) for i in range(per_batch)]


def test_a_large_batch_is_one_append(logbus: LogBus) -> None:
    lines = [f"row {n}" for n in range(2500)]

    assert logbus.append(RUN, lines) == 2500

    stored = logbus.read(RUN, 2490)
    assert stored == [LogLine(n, f"row {n}") for n in range(2490, 2500)]


def test_finish_marks_the_end_and_starts_the_retention_ttl(
    logbus: LogBus, let_time_pass: TimePasser
) -> None:
    logbus.append(RUN, ["a", "b"])
    assert logbus.ended(RUN) is None

    logbus.finish(RUN, "failed", ttl=0.05)

    assert logbus.ended(RUN) == "failed"
    assert [line.text for line in logbus.read(RUN)] == ["a", "b"]
    let_time_pass(0.06, until=lambda: logbus.ended(RUN) is None and logbus.length(RUN) == 0)
    assert logbus.read(RUN) == []


def test_a_late_subscriber_learns_the_end_from_ended(logbus: LogBus) -> None:
    logbus.append(RUN, ["done"])
    logbus.finish(RUN, "success", ttl=60)

    with logbus.subscribe(RUN) as subscription:
        assert subscription.get(0.05) is None
    assert logbus.ended(RUN) == "success"
    assert logbus.read(RUN) == [LogLine(0, "done")]


def test_finish_without_lines_still_records_the_end(logbus: LogBus) -> None:
    logbus.finish(RUN, "skipped", ttl=60)

    assert logbus.ended(RUN) == "skipped"
    assert logbus.length(RUN) == 0


@pytest.mark.parametrize(
    "text",
    [
        "开始同步账号... 完成 ✓",
        "emoji 🚀 and combining é",
        'quotes " and \\ backslash / slash',
        "tab\tand\nnewline inside one line",
        "",
        '{"seq": 99, "line": "not a real message"}',
    ],
)
def test_text_round_trips_stored_and_live(logbus: LogBus, text: str) -> None:
    with logbus.subscribe(RUN) as subscription:
        logbus.append(RUN, [text, "中文"])

        assert _drain(subscription, 2) == [LogLine(0, text), LogLine(1, "中文")]
    assert logbus.read(RUN) == [LogLine(0, text), LogLine(1, "中文")]


def test_unencodable_characters_become_question_marks(logbus: LogBus) -> None:
    logbus.append(RUN, ["bad \udcff byte"])

    assert logbus.read(RUN) == [LogLine(0, "bad ? byte")]


def test_delete_drops_lines_and_end(logbus: LogBus) -> None:
    logbus.append(RUN, ["x"])
    logbus.finish(RUN, "success", ttl=60)

    logbus.delete(RUN)

    assert logbus.read(RUN) == []
    assert logbus.ended(RUN) is None
    assert logbus.append(RUN, ["fresh"]) == 1


# ---------------------------------------------------------------- Redis specifics


@pytest.mark.redis
def test_redis_wire_format_and_key_layout(redis_client: Any, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    bus = RedisLogBus(redis_client, keys)
    raw = redis_client.pubsub()
    raw.subscribe(f"{key_prefix}:log:{RUN}:live")
    try:
        assert raw.get_message(timeout=WAIT)["type"] == "subscribe"
        bus.append(RUN, ["中文 line", "two"])
        bus.finish(RUN, "success", ttl=30)
        payloads = [raw.get_message(timeout=WAIT)["data"] for _ in range(3)]
    finally:
        raw.close()

    assert [json.loads(p) for p in payloads] == [
        {"seq": 0, "line": "中文 line"},
        {"seq": 1, "line": "two"},
        {"end": "success"},
    ]
    assert [decode_live_message(p) for p in payloads] == [
        LogLine(0, "中文 line"),
        LogLine(1, "two"),
        LogEnd("success"),
    ]
    assert redis_client.lrange(f"{key_prefix}:log:{RUN}", 0, -1) == [
        "中文 line".encode(),
        b"two",
    ]
    assert redis_client.get(f"{key_prefix}:log:{RUN}:end") == b"success"
    for key in (f"{key_prefix}:log:{RUN}", f"{key_prefix}:log:{RUN}:end"):
        assert 25_000 < redis_client.pttl(key) <= 30_000


def test_decode_live_message_rejects_other_shapes() -> None:
    assert decode_live_message(b"not json") is None
    assert decode_live_message("[1, 2]") is None
    assert decode_live_message('{"seq": "1", "line": "x"}') is None
    assert decode_live_message('{"seq": true, "line": "x"}') is None
    assert decode_live_message('{"end": "success"}') == LogEnd("success")
