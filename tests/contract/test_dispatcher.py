"""The Dispatcher contract, run against the recording double the pytest plugin ships and
against ``CeleryDispatcher`` on a real broker (Redis) and on the in-process ``memory://``
broker the demo and the plugin use.

What each implementation "published" is read back the way a worker would see it: for
Celery, the message is taken off its queue with kombu (task name, id, kwargs, headers,
expiry); for the recording double, from its ``sent`` list.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery

from dataforge_scheduler.celery.dispatch import CeleryDispatcher
from dataforge_scheduler.core.enums import ExecutionTrigger
from dataforge_scheduler.core.messages import EXECUTION_ID, SLOT, TRIGGER, message_for
from dataforge_scheduler.core.ports import Dispatcher
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.testing import RecordingDispatcher

SLOT_TIME = datetime(2030, 5, 1, 8, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Received:
    """One published run as a consumer sees it."""

    task_name: str
    task_id: str
    kwargs: dict[str, Any]
    headers: dict[str, Any]
    expires: datetime | None


@dataclass
class Subject:
    dispatcher: Dispatcher
    received: Callable[[], list[Received]]
    broken: Callable[[], Dispatcher]
    #: runs ``cancel`` inside a listener for revokes (the recording double's list, or a
    #: Celery control node as a worker runs one); returns the revokes seen
    cancels_seen: Callable[[Callable[[], None]], list[dict[str, Any]]]


def _celery_revokes(app: Celery, act: Callable[[], None]) -> list[dict[str, Any]]:
    """The revoke broadcasts a worker's control node receives while ``act`` runs."""
    seen: list[dict[str, Any]] = []

    def revoke(state: Any, **arguments: Any) -> None:
        seen.append(arguments)

    with app.connection_for_write() as connection:
        node = app.control.mailbox.Node("contract@probe", handlers={"revoke": revoke})
        consumer = node.listen(channel=connection.default_channel)
        with contextlib.suppress(TimeoutError, OSError):  # subscribes on the first drain
            connection.drain_events(timeout=0.2)
        act()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, OSError):
                connection.drain_events(timeout=0.2)
        consumer.cancel()
    return seen


def _celery_received(app: Celery, queue: str) -> list[Received]:
    found: list[Received] = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            headers = dict(message.headers)
            _, kwargs, _ = message.decode()
            expires = headers.get("expires")
            found.append(
                Received(
                    task_name=headers["task"],
                    task_id=headers["id"],
                    kwargs=kwargs,
                    headers={k: v for k, v in headers.items() if k.startswith("df_")},
                    expires=datetime.fromisoformat(expires) if expires else None,
                )
            )
    return found


def _celery_app(broker: str, key_prefix: str) -> Celery:
    app = Celery("contract-dispatch", broker=broker, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": f"{key_prefix}:broker:"}
    app.conf.task_publish_retry = False
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_timeout = 1
    return app


@pytest.fixture
def queue() -> str:
    return f"df-contract-{uuid.uuid4().hex[:8]}"


@pytest.fixture(
    params=[
        "recording",
        "celery-memory",
        pytest.param("celery-redis", marks=pytest.mark.redis),
    ]
)
def subject(request: pytest.FixtureRequest, key_prefix: str, queue: str) -> Iterator[Subject]:
    if request.param == "recording":
        recording = RecordingDispatcher()

        def recorded() -> list[Received]:
            return [
                Received(
                    task_name=sent.task_name,
                    task_id=sent.task_id,
                    kwargs=sent.kwargs,
                    headers=sent.headers,
                    expires=sent.options.get("expires"),
                )
                for sent in recording.sent
            ]

        def broken_recording() -> Dispatcher:
            recording.down = True
            return recording

        def recorded_cancels(act: Callable[[], None]) -> list[dict[str, Any]]:
            before = len(recording.cancelled)
            act()
            ids = recording.cancelled[before:]
            return [{"task_id": ids, "terminate": True, "signal": "SIGTERM"}] if ids else []

        yield Subject(recording, recorded, broken_recording, recorded_cancels)
        return
    if request.param == "celery-memory":
        broker = f"memory://contract-{uuid.uuid4().hex[:8]}"
    else:
        request.getfixturevalue("redis_client")  # deletes the test's keys afterwards
        broker = request.getfixturevalue("redis_url")
    app = _celery_app(broker, key_prefix)
    refusing = _celery_app("redis://127.0.0.1:1/0", key_prefix)
    yield Subject(
        CeleryDispatcher(app),
        lambda: _celery_received(app, queue),
        lambda: CeleryDispatcher(refusing),
        lambda act: _celery_revokes(app, act),
    )


def _run(queue: str, **fields: Any) -> ClaimedSlot:
    values: dict[str, Any] = {
        "execution_id": 41,
        "celery_task_id": str(uuid.uuid4()),
        "scheduled_task_id": 7,
        "schedule_name": "hourly",
        "task_name": "app.sync_accounts",
        "scheduled_for": SLOT_TIME,
        "kwargs": {"days": 3, "scheduled_task_id": 7, "label": "账号"},
        "queue": queue,
        "priority": 3,
    }
    values.update(fields)
    return ClaimedSlot(**values)


def test_a_slot_is_published_once_with_its_own_task_id(subject: Subject, queue: str) -> None:
    run = _run(queue)
    sent = subject.dispatcher.dispatch(run)

    [received] = subject.received()
    assert received.task_id == run.celery_task_id == sent.task_id
    assert received.task_name == "app.sync_accounts"
    assert received.kwargs == {"days": 3, "scheduled_task_id": 7, "label": "账号"}
    assert received.headers == {
        TRIGGER: "schedule",
        EXECUTION_ID: 41,
        SLOT: SLOT_TIME.isoformat(),
    }
    assert received.expires is None
    assert sent == message_for(run)


def test_a_manual_run_has_no_slot_and_expires_from_when_it_was_made(
    subject: Subject, queue: str
) -> None:
    made = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)
    run = _run(
        queue,
        scheduled_for=None,
        trigger=ExecutionTrigger.MANUAL,
        claimed_at=made,
        expire_seconds=120,
    )
    subject.dispatcher.dispatch(run)

    [received] = subject.received()
    assert received.headers == {TRIGGER: "manual", EXECUTION_ID: 41}
    assert received.expires == made + timedelta(seconds=120)


def test_a_slot_expires_counting_from_its_slot_time(subject: Subject, queue: str) -> None:
    subject.dispatcher.dispatch(_run(queue, expire_seconds=30))
    [received] = subject.received()
    assert received.expires == SLOT_TIME + timedelta(seconds=30)


def test_message_for_builds_what_dispatch_publishes(subject: Subject, queue: str) -> None:
    run = _run(queue)
    assert subject.dispatcher.message_for(run) == message_for(run)
    assert subject.received() == []  # building a message publishes nothing


def test_an_unreachable_broker_raises_backend_unavailable_and_publishes_nothing(
    subject: Subject, queue: str
) -> None:
    run = _run(queue)
    with pytest.raises(BackendUnavailable, match=run.celery_task_id):
        subject.broken().dispatch(run)
    assert subject.received() == []


def test_a_cancel_revokes_with_terminate_and_publishes_no_run(subject: Subject, queue: str) -> None:
    runs = [_run(queue).celery_task_id, _run(queue).celery_task_id]
    seen = subject.cancels_seen(lambda: subject.dispatcher.cancel(runs))
    assert seen == [{"task_id": runs, "terminate": True, "signal": "SIGTERM"}]
    assert subject.received() == []
    subject.broken().cancel([])  # nothing to cancel: the broker is not even asked


def test_an_unreachable_broker_refuses_a_cancel_naming_the_run(
    subject: Subject, queue: str
) -> None:
    run = _run(queue)
    with pytest.raises(BackendUnavailable, match=run.celery_task_id):
        subject.broken().cancel([run.celery_task_id])


# ---------------------------------------------------------------- Celery on Redis: batches


def _queued(client: Any, key_prefix: str, queue: str) -> int:
    return int(client.llen(f"{key_prefix}:broker:{queue}"))


@pytest.mark.redis
def test_a_redis_batch_writes_its_runs_once_when_it_ends(
    redis_client: Any, redis_url: str, key_prefix: str, queue: str
) -> None:
    app = _celery_app(redis_url, key_prefix)
    dispatcher = CeleryDispatcher(app)
    runs = [_run(queue, execution_id=n) for n in range(3)]

    with dispatcher.batch():
        for run in runs:
            dispatcher.dispatch(run)
        buffered = _queued(redis_client, key_prefix, queue)

    assert buffered == 0, "inside the batch the runs are only buffered"
    assert [r.task_id for r in _celery_received(app, queue)] == [r.celery_task_id for r in runs]


@pytest.mark.redis
def test_a_redis_batch_that_cannot_be_written_raises_backend_unavailable(
    tmp_path: Any, key_prefix: str, queue: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        dispatcher = CeleryDispatcher(_celery_app(f"redis://127.0.0.1:{port}/0", key_prefix))

        def buffer_then_lose_the_broker() -> None:
            with dispatcher.batch():
                dispatcher.dispatch(_run(queue))  # buffered: the broker is still up
                server.kill()
                server.wait(timeout=10)

        with pytest.raises(BackendUnavailable, match="delivery is uncertain"):
            buffer_then_lose_the_broker()
    finally:
        server.kill()
        server.wait(timeout=10)
