"""The ChangeNotices contract, run against MemoryChangeNotices and RedisChangeNotices."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dataforge_scheduler.core.ports import ChangeNotices
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.redis.notices import RedisChangeNotices

WAIT = 5.0


def test_a_notice_wakes_a_waiting_listener(notices: ChangeNotices) -> None:
    with notices.listen() as listener:
        outcome: list[tuple[bool, float]] = []
        waiting = threading.Event()

        def waiter() -> None:
            waiting.set()
            started = time.monotonic()
            outcome.append((listener.wait(WAIT), time.monotonic() - started))

        thread = threading.Thread(target=waiter)
        thread.start()
        assert waiting.wait(WAIT)
        notices.publish(12)
        thread.join(WAIT + 1)

    assert len(outcome) == 1
    woke, elapsed = outcome[0]
    assert woke is True
    assert elapsed < WAIT - 1, "the waiter must wake on the notice, not on its timeout"


def test_wait_returns_false_on_timeout(notices: ChangeNotices) -> None:
    with notices.listen() as listener:
        started = time.monotonic()

        assert listener.wait(0.05) is False
        assert time.monotonic() - started >= 0.04
        assert listener.wait(0) is False


def test_a_burst_of_notices_is_one_wake_up(notices: ChangeNotices) -> None:
    with notices.listen() as listener:
        for schedule_id in range(5):
            notices.publish(schedule_id)
        notices.publish()

        assert listener.wait(WAIT) is True
        assert listener.wait(0.05) is False


def test_every_listener_is_woken(notices: ChangeNotices) -> None:
    with notices.listen() as first, notices.listen() as second:
        notices.publish(3)

        assert first.wait(WAIT) is True
        assert second.wait(WAIT) is True


def test_a_notice_before_listening_is_not_kept(notices: ChangeNotices) -> None:
    notices.publish(1)

    with notices.listen() as listener:
        assert listener.wait(0.05) is False


def test_a_closed_listener_returns_at_once(notices: ChangeNotices) -> None:
    listener = notices.listen()
    listener.close()
    listener.close()
    notices.publish(1)

    started = time.monotonic()
    assert listener.wait(WAIT) is False
    assert time.monotonic() - started < 1


def test_publish_without_listeners_is_fine(notices: ChangeNotices) -> None:
    notices.publish(None)
    notices.publish(7)
    with notices.listen() as listener:
        # nothing was kept for a listener that did not exist yet
        assert listener.wait(0.05) is False


@pytest.mark.redis
def test_redis_notice_channel_and_payload(redis_client: Any, key_prefix: str) -> None:
    raw = redis_client.pubsub()
    raw.subscribe(f"{key_prefix}:schedules:changed")
    try:
        assert raw.get_message(timeout=WAIT)["type"] == "subscribe"
        RedisChangeNotices(redis_client, Keys(key_prefix)).publish(42)
        message = raw.get_message(timeout=WAIT)
    finally:
        raw.close()

    assert message["data"] == b'{"schedule_id": 42}'
