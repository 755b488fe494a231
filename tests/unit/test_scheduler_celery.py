"""DatabaseScheduler as Celery sees it, and CeleryDispatcher.

The lazy banner instance does no I/O, ``close()`` is idempotent, ``tick()`` waits inside
the call and is cut short by a schedule-change notice or by ``close()``, and setup()
makes it the app's beat scheduler. No test sleeps to let time pass: waits end on events.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from kombu.utils.imports import symbol_by_name
from tests.integration.procs import wait_until
from tests.scheduler_harness import RECORD, T0, Harness, seconds

from dataforge_scheduler.celery.beat import DatabaseScheduler
from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.celery.wakeup import NoticeWaiter
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.memory.notices import MemoryChangeNotices
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unreachable_runtime() -> Runtime:
    settings = Settings(
        database_url=f"postgresql+psycopg://beat:s3cret@127.0.0.1:{_free_port()}/nothing",
        redis_url="memory://",
        celery_broker_url="memory://",
        celery_result_backend="cache+memory://",
    )
    return Runtime(settings, registry=TaskRegistry())


def test_the_lazy_banner_instance_does_no_io() -> None:
    runtime = _unreachable_runtime()
    scheduler = DatabaseScheduler(Celery("lazy", set_as_current=False), runtime=runtime, lazy=True)
    assert runtime._engine is None  # nothing connected, not even an engine
    assert scheduler.schedule == {}


def test_info_names_the_database_without_its_password_even_when_unreachable() -> None:
    scheduler = DatabaseScheduler(
        Celery("lazy", set_as_current=False), runtime=_unreachable_runtime(), lazy=True
    )
    info = scheduler.info
    assert "postgresql+psycopg://beat:***@127.0.0.1" in info
    assert "s3cret" not in info
    assert "active schedules -> unknown (database unreachable" in info


def test_info_counts_the_active_schedules(sqlite_engine: Any) -> None:
    h = Harness(sqlite_engine)
    h.create(task_type="interval", interval_seconds=60)
    h.create(task_type="interval", interval_seconds=60)
    paused = h.create(task_type="interval", interval_seconds=60, status="paused")
    assert paused
    assert "active schedules -> 2" in h.scheduler.info


def test_nothing_walks_the_table_and_celery_sync_hooks_are_no_ops(sqlite_engine: Any) -> None:
    h = Harness(sqlite_engine)
    h.create(task_type="interval", interval_seconds=60)
    assert h.scheduler.schedule == {}
    assert h.scheduler.schedules_equal({}, {"x": object()}) is True
    h.scheduler.sync()


def test_close_is_idempotent_and_a_closed_scheduler_does_not_wait(sqlite_engine: Any) -> None:
    h = Harness(sqlite_engine)
    h.scheduler.close()
    h.scheduler.close()  # Celery calls it twice on SIGTERM
    h.create(task_type="interval", interval_seconds=1)
    h.clock.set(T0 + seconds(5))
    started = time.monotonic()
    assert h.scheduler.tick() == 1.0  # no pass, and no hot loop if Celery keeps calling
    assert time.monotonic() - started < 1.0
    assert h.dispatcher.sent == []


class _SignalDuringWait:
    """A listener whose wait is "interrupted by SIGTERM": Celery's handler calls close()
    on the scheduler and raises SystemExit, as celery beat's sync handler does."""

    def __init__(self, on_wait: Any) -> None:
        self.on_wait = on_wait
        self.waiting = False
        self.closed_while_waiting = False
        self.closed = False

    def wait(self, timeout: float) -> bool:
        self.waiting = True
        try:
            self.on_wait()
            return False
        finally:
            self.waiting = False

    def close(self) -> None:
        self.closed_while_waiting = self.closed_while_waiting or self.waiting
        self.closed = True


def test_close_from_a_signal_handler_mid_wait_lets_system_exit_through() -> None:
    holder: list[NoticeWaiter] = []

    def sigterm() -> None:
        holder[0].close()
        raise SystemExit

    listener = _SignalDuringWait(sigterm)
    waiter = NoticeWaiter(lambda: listener)
    holder.append(waiter)
    with pytest.raises(SystemExit):
        waiter.wait(5.0)
    # a socket closed under redis-py's read would have replaced SystemExit with an error
    assert listener.closed_while_waiting is False
    assert listener.closed is True


class _Polled:
    """A listener that records how it was waited on and answers from a list."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.waits: list[float] = []
        self.closed = False

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return self.answers.pop(0) if self.answers else False

    def close(self) -> None:
        self.closed = True


def test_two_sources_the_first_is_polled_between_short_waits_on_the_last() -> None:
    database, redis = _Polled([False, False, True]), _Polled([])
    waiter = NoticeWaiter([lambda: database, lambda: redis], poll_seconds=0.01)
    assert waiter.wait(5.0) is True
    assert database.waits == [0.0, 0.0, 0.0]  # never blocks on the polled source
    assert redis.waits == [0.01, 0.01]  # short waits, so the polled one is seen soon


def test_a_source_without_notices_is_not_asked_again_and_the_other_blocks_alone() -> None:
    asked: list[int] = []

    def no_notices() -> None:
        asked.append(1)

    redis = _Polled([False, True])
    waiter = NoticeWaiter([no_notices, lambda: redis], slice_seconds=0.05)
    assert waiter.wait(5.0) is True
    assert asked == [1]
    assert redis.waits == [0.05, 0.05]  # alone, it waits whole slices


def test_a_failing_source_is_dropped_and_the_other_still_wakes_the_wait() -> None:
    class Broken(_Polled):
        def wait(self, timeout: float) -> bool:
            raise OSError("connection lost")

    broken, redis = Broken([]), _Polled([False, True])
    waiter = NoticeWaiter([lambda: broken, lambda: redis], slice_seconds=0.05)
    assert waiter.wait(5.0) is True
    assert broken.closed is True


def _tick_in_thread(scheduler: DatabaseScheduler) -> tuple[threading.Thread, list[float]]:
    returned: list[float] = []
    thread = threading.Thread(target=lambda: returned.append(scheduler.tick()), daemon=True)
    thread.start()
    return thread, returned


def _listening(notices: Any) -> bool:
    assert isinstance(notices, MemoryChangeNotices)
    return bool(notices._listeners)


def test_tick_waits_inside_the_call_until_a_change_notice(sqlite_engine: Any) -> None:
    h = Harness(sqlite_engine, celery_beat_sync_every=60)
    h.create(task_type="interval", interval_seconds=3600)
    thread, returned = _tick_in_thread(h.scheduler)
    wait_until(lambda: _listening(h.runtime.notices), timeout=10, message="a notice listener")
    assert thread.is_alive()  # next run is an hour away: it is waiting
    h.runtime.notices.publish(1)
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert returned == [0.0]  # Celery's loop calls tick() again at once


def test_close_from_another_thread_ends_a_wait_promptly(sqlite_engine: Any) -> None:
    h = Harness(sqlite_engine, celery_beat_sync_every=60)
    thread, returned = _tick_in_thread(h.scheduler)
    wait_until(lambda: _listening(h.runtime.notices), timeout=10, message="a notice listener")
    h.scheduler.close()
    thread.join(timeout=3)
    assert not thread.is_alive()
    assert returned == [0.0]


def test_the_wait_is_until_the_next_run_capped_by_sync_every(sqlite_engine: Any) -> None:
    h = Harness(sqlite_engine, celery_beat_sync_every=30)
    h.create(task_type="interval", interval_seconds=10)
    result = h.at(T0 + seconds(2))
    assert h.scheduler._wait_seconds(result) == pytest.approx(8.0)
    h.create(task_type="interval", interval_seconds=3600)
    h.at(T0 + seconds(10))
    result = h.at(T0 + seconds(11))
    assert h.scheduler._wait_seconds(result) == pytest.approx(9.0)
    assert h.scheduler._wait_seconds(type(result)()) == 30.0  # nothing scheduled


def test_setup_makes_it_the_beat_scheduler_and_wires_the_dispatcher() -> None:
    app = Celery("wired", set_as_current=False)
    runtime = setup(
        app,
        Settings(
            database_url="sqlite://",
            redis_url="memory://",
            celery_broker_url="memory://",
            celery_result_backend="cache+memory://",
        ),
        registry=TaskRegistry(),
    )
    assert app.conf.beat_scheduler == "dataforge_scheduler.DatabaseScheduler"
    assert isinstance(runtime.dispatcher, CeleryDispatcher)
    assert symbol_by_name("dataforge_scheduler.celery.beat:DatabaseScheduler") is DatabaseScheduler
    scheduler = DatabaseScheduler(app, lazy=True)  # finds the runtime setup() bound
    assert scheduler.runtime is runtime
    assert scheduler.dispatcher is runtime.dispatcher


def test_without_setup_the_scheduler_fails_at_start_with_advice() -> None:
    with pytest.raises(ConfigurationError, match=r"setup\(\) has not been called"):
        DatabaseScheduler(Celery("bare", set_as_current=False))


def test_static_beat_schedule_entries_are_reported_not_silently_dropped(
    sqlite_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(sqlite_engine)
    h.app.conf.beat_schedule = {"old": {"task": RECORD, "schedule": timedelta(seconds=5)}}
    with caplog.at_level(logging.WARNING, logger="dataforge_scheduler"):
        h.new_scheduler()
    assert any("beat_schedule has 1 entries" in r.getMessage() for r in caplog.records)
