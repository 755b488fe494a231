"""The AsyncLogFeed contract (the API's non-blocking live log), run against
``RedisAsyncLogFeed`` and the in-process ``PollingAsyncLogFeed``, each fed by its own
backend's ``LogBus``."""

from __future__ import annotations

import asyncio

import pytest

from dataforge_scheduler.core.ports import AsyncLogFeed, LogBus, LogEnd, LogLine

RUN = "c73-run"
WAIT = 5.0

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_lines_appended_after_subscribe_arrive_in_order_then_the_end(
    log_feed: AsyncLogFeed, logbus: LogBus
) -> None:
    subscription = await log_feed.subscribe(RUN)
    try:
        await asyncio.to_thread(logbus.append, RUN, ["one", "二"])
        await asyncio.to_thread(logbus.append, RUN, ["three"])
        await asyncio.to_thread(logbus.finish, RUN, "success", ttl=30)
        events = [await subscription.get(WAIT) for _ in range(4)]
    finally:
        await subscription.close()
    assert events == [LogLine(0, "one"), LogLine(1, "二"), LogLine(2, "three"), LogEnd("success")]


async def test_lines_from_before_subscribe_are_not_replayed(
    log_feed: AsyncLogFeed, logbus: LogBus
) -> None:
    await asyncio.to_thread(logbus.append, RUN, ["early"])
    subscription = await log_feed.subscribe(RUN)
    try:
        await asyncio.to_thread(logbus.append, RUN, ["late"])
        assert await subscription.get(WAIT) == LogLine(1, "late")
    finally:
        await subscription.close()


async def test_get_answers_none_when_nothing_came(log_feed: AsyncLogFeed) -> None:
    subscription = await log_feed.subscribe(RUN)
    try:
        assert await subscription.get(0.2) is None
        assert await subscription.get(0) is None
    finally:
        await subscription.close()


async def test_waiting_leaves_the_event_loop_free(log_feed: AsyncLogFeed) -> None:
    subscription = await log_feed.subscribe(RUN)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        assert await subscription.get(0.3) is None
    finally:
        task.cancel()
        await subscription.close()
    assert ticks >= 2  # the loop ran other work while get() waited


async def test_close_is_idempotent_and_ends_the_feed(
    log_feed: AsyncLogFeed, logbus: LogBus
) -> None:
    subscription = await log_feed.subscribe(RUN)
    await subscription.close()
    await subscription.close()
    await asyncio.to_thread(logbus.append, RUN, ["after close"])
    assert await subscription.get(0.2) is None


async def test_runs_are_kept_apart(log_feed: AsyncLogFeed, logbus: LogBus) -> None:
    mine = await log_feed.subscribe(RUN)
    other = await log_feed.subscribe(RUN + "-other")
    try:
        await asyncio.to_thread(logbus.append, RUN + "-other", ["not yours"])
        await asyncio.to_thread(logbus.append, RUN, ["yours"])
        assert await mine.get(WAIT) == LogLine(0, "yours")
        assert await other.get(WAIT) == LogLine(0, "not yours")
    finally:
        await mine.close()
        await other.close()
