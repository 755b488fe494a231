"""The live log stream (SSE) under a real uvicorn: replay then live lines, the end
event, Last-Event-ID resume, heartbeats, cleanup on disconnect, the stream cap, and the
in-process (memory://) backend."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tests.api.helpers import HEADERS, KEY, PREFIX, READ_KEY, make_registry, make_settings
from tests.api.servers import Event, serve, sse_events
from tests.integration.procs import wait_until
from tests.runs import celery_id, finish, manual

from dataforge_scheduler.api import ApiApp, create_app
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql import store

TIMEOUT = httpx.Timeout(10.0)


def _execution(runtime: Runtime) -> int:
    with runtime.session() as session:
        return manual(
            session,
            scheduled_task_id=None,
            task_name="dftest.sync_accounts",
            celery_task_id=str(uuid.uuid4()),
            kwargs={},
            now=datetime.now(UTC),
        ).id


def _finish_row(
    runtime: Runtime, execution_id: int, status: ExecutionStatus, log: str | None
) -> None:
    with runtime.session() as session:
        row = store.get_execution(session, execution_id)
        finish(
            session,
            celery_task_id=row.celery_task_id,
            status=status,
            now=datetime.now(UTC),
            log_output=log,
        )


@pytest.fixture
def base_url(app: ApiApp) -> Iterator[str]:
    with serve(app) as url:
        yield f"{url}"


def _stream(base_url: str, execution_id: int, **headers: str) -> Any:
    client = httpx.Client(base_url=base_url, headers={**HEADERS, **headers}, timeout=TIMEOUT)
    return client, client.stream("GET", f"/executions/{execution_id}/logs")


def _events(base_url: str, execution_id: int, **headers: str) -> list[Event]:
    client, stream = _stream(base_url, execution_id, **headers)
    with client, stream as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event for event in sse_events(response) if isinstance(event, Event)]


def test_a_finished_run_replays_its_lines_and_ends_at_once(base_url: str, runtime: Runtime) -> None:
    execution_id = _execution(runtime)
    runtime.logbus.append(celery_id(runtime, execution_id), ["one", "two\nhalf", "three"])
    runtime.logbus.finish(celery_id(runtime, execution_id), "success", ttl=60)

    events = _events(base_url, execution_id)

    assert [(e.event, e.id, e.data) for e in events[:3]] == [
        ("log", "0", "one"),
        ("log", "1", "two\nhalf"),
        ("log", "2", "three"),
    ]
    assert events[3].event == "end"
    assert events[3].json() == {"execution_id": execution_id, "status": "success"}


def test_a_run_whose_live_lines_expired_replays_the_stored_log(
    base_url: str, runtime: Runtime
) -> None:
    execution_id = _execution(runtime)
    _finish_row(runtime, execution_id, ExecutionStatus.FAILED, "a\nb")

    events = _events(base_url, execution_id, **{"Last-Event-ID": "0"})

    assert [(e.event, e.data) for e in events] == [("log", "b"), ("end", events[-1].data)]
    assert events[-1].json()["status"] == "failed"


def test_lines_arrive_live_then_the_end_event(base_url: str, runtime: Runtime) -> None:
    execution_id = _execution(runtime)
    runtime.logbus.append(celery_id(runtime, execution_id), ["before"])
    received: list[Event | str] = []

    client, stream = _stream(base_url, execution_id)
    with client, stream as response:
        for event in sse_events(response):
            received.append(event)
            if not isinstance(event, Event):
                continue
            if event.data == "before":  # replayed: now write while the client listens
                runtime.logbus.append(celery_id(runtime, execution_id), ["live 1", "live 2"])
            elif event.data == "live 2":
                runtime.logbus.finish(celery_id(runtime, execution_id), "success", ttl=60)
            elif event.event == "end":
                break

    events = [e for e in received if isinstance(e, Event)]
    assert [(e.id, e.data) for e in events[:3]] == [
        ("0", "before"),
        ("1", "live 1"),
        ("2", "live 2"),
    ]
    assert events[-1].event == "end"
    assert events[-1].json()["status"] == "success"


def test_last_event_id_resumes_after_that_line(base_url: str, runtime: Runtime) -> None:
    execution_id = _execution(runtime)
    runtime.logbus.append(celery_id(runtime, execution_id), ["l0", "l1", "l2", "l3"])
    runtime.logbus.finish(celery_id(runtime, execution_id), "success", ttl=60)

    by_header = _events(base_url, execution_id, **{"Last-Event-ID": "1"})
    client = httpx.Client(base_url=base_url, headers=HEADERS, timeout=TIMEOUT)
    with (
        client,
        client.stream(
            "GET", f"/executions/{execution_id}/logs", params={"last_event_id": 2}
        ) as response,
    ):
        by_query = [e for e in sse_events(response) if isinstance(e, Event)]
    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=TIMEOUT) as client:
        bad = client.get(f"/executions/{execution_id}/logs", headers={"Last-Event-ID": "x"})

    assert [e.data for e in by_header if e.event == "log"] == ["l2", "l3"]
    assert [e.data for e in by_query if e.event == "log"] == ["l3"]
    assert bad.status_code == 422


def test_idle_streams_get_heartbeats_and_end_when_the_row_finishes(
    base_url: str, runtime: Runtime
) -> None:
    """A run the worker never finished on the bus (the reaper marked it lost) still ends."""
    execution_id = _execution(runtime)
    received: list[Event | str] = []
    client, stream = _stream(base_url, execution_id)
    with client, stream as response:
        for event in sse_events(response):
            received.append(event)
            if isinstance(event, str):
                _finish_row(runtime, execution_id, ExecutionStatus.LOST, None)
            elif event.event == "end":
                break
    assert ": keep-alive" in received
    assert isinstance(received[-1], Event)
    assert received[-1].json()["status"] == "lost"


def _subscribers(runtime: Runtime, execution_id: int) -> int:
    channel = Keys(runtime.settings.key_prefix).log_channel(celery_id(runtime, execution_id))
    return int(dict(runtime.backend.client.pubsub_numsub(channel))[channel.encode()])


def test_disconnect_closes_the_subscription(base_url: str, app: ApiApp, runtime: Runtime) -> None:
    execution_id = _execution(runtime)
    runtime.logbus.append(celery_id(runtime, execution_id), ["x"])
    client, stream = _stream(base_url, execution_id)
    with client, stream as response:
        # held, not dropped: a generator left behind by ``break`` is closed at once, which
        # closes the response and disconnects before the assertions below
        events = sse_events(response)
        for event in events:
            if isinstance(event, Event):
                break
        assert _subscribers(runtime, execution_id) == 1
        assert app.state.sse_streams == 1
        events.close()

    wait_until(lambda: _subscribers(runtime, execution_id) == 0, timeout=5, message="unsubscribe")
    wait_until(lambda: app.state.sse_streams == 0, timeout=5, message="stream slot freed")


def test_streams_past_the_cap_are_refused_with_503(runtime: Runtime) -> None:
    app = create_app(runtime, sse_max_streams=1, heartbeat_seconds=0.5)
    execution_id = _execution(runtime)
    with serve(app) as url:
        client, stream = _stream(url, execution_id)
        with client, stream as response:
            assert response.status_code == 200
            with httpx.Client(base_url=url, headers=HEADERS, timeout=TIMEOUT) as other:
                refused = other.get(f"/executions/{execution_id}/logs")
            assert refused.status_code == 503
            assert "too many" in refused.json()["detail"]
        wait_until(lambda: app.state.sse_streams == 0, timeout=5, message="stream slot freed")
        missing = httpx.get(f"{url}/executions/987654/logs", headers=HEADERS, timeout=TIMEOUT)
        assert missing.status_code == 404
    assert app.state.sse_streams == 0


def test_the_memory_backend_streams_live_too(pg: Any, pg_url: str) -> None:
    settings = make_settings(pg_url, "memory://", "dfmem")
    runtime = Runtime(settings, registry=make_registry(), engine=pg)
    app = create_app(runtime, heartbeat_seconds=0.5)
    execution_id = _execution(runtime)
    seen: list[str] = []
    with serve(app) as url:
        client, stream = _stream(url, execution_id)
        with client, stream as response:
            for event in sse_events(response):
                if isinstance(event, str) and not seen:
                    runtime.logbus.append(celery_id(runtime, execution_id), ["mem 1"])
                elif isinstance(event, Event) and event.event == "log":
                    seen.append(event.data)
                    runtime.logbus.finish(celery_id(runtime, execution_id), "success", ttl=60)
                elif isinstance(event, Event):
                    seen.append(event.event)
                    break
    assert seen == ["mem 1", "end"]
    assert PREFIX  # mounted at the root here: the stream needs no prefix


@pytest.mark.parametrize(
    "value", [b"--1", "\u00b2".encode(), b"9" * 5000, b"-2", b"1.5", b"0x10", "\u0661".encode()]
)
def test_an_odd_last_event_id_is_a_422_never_a_500(
    base_url: str, runtime: Runtime, value: bytes
) -> None:
    execution_id = _execution(runtime)
    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=TIMEOUT) as client:
        answer = client.get(f"/executions/{execution_id}/logs", headers={"Last-Event-ID": value})
    assert answer.status_code == 422, answer.text
    [item] = answer.json()["detail"]
    assert item["loc"] == ["header", "last-event-id"]


def test_one_caller_cannot_take_every_stream(runtime: Runtime) -> None:
    """Past its own limit a caller gets 429; the other callers still get streams."""
    app = create_app(runtime, api_keys=[KEY], read_only_keys=[READ_KEY], sse_max_streams_per_key=2)
    execution_id = _execution(runtime)
    reader = {"X-API-Key": READ_KEY}
    with serve(app) as url:
        first_client, first = _stream(url, execution_id, **reader)
        second_client, second = _stream(url, execution_id, **reader)
        with first_client, first as one, second_client, second as two:
            assert (one.status_code, two.status_code) == (200, 200)
            with httpx.Client(base_url=url, timeout=TIMEOUT) as other:
                third = other.get(f"/executions/{execution_id}/logs", headers=reader)
                with other.stream(
                    "GET", f"/executions/{execution_id}/logs", headers={"X-API-Key": KEY}
                ) as writer:
                    writer_status = writer.status_code
            assert third.status_code == 429, third.text
            assert "2" in third.json()["detail"]
            assert writer_status == 200  # another key is not held back
        wait_until(lambda: app.state.sse_streams == 0, timeout=5, message="slots freed")
    assert app.state.sse_by_principal == {}


def test_a_stream_ends_when_its_lifetime_is_up_and_resumes(runtime: Runtime) -> None:
    app = create_app(runtime, sse_max_stream_seconds=1, heartbeat_seconds=0.3)
    execution_id = _execution(runtime)
    runtime.logbus.append(celery_id(runtime, execution_id), ["l0", "l1"])
    with serve(app) as url:
        started = time.monotonic()
        events = _events(url, execution_id)  # returns once the server ends the stream
        lasted = time.monotonic() - started
        resumed_client, resumed = _stream(url, execution_id, **{"Last-Event-ID": "1"})
        runtime.logbus.append(celery_id(runtime, execution_id), ["l2"])
        runtime.logbus.finish(celery_id(runtime, execution_id), "success", ttl=60)
        with resumed_client, resumed as response:
            after = [e for e in sse_events(response) if isinstance(e, Event)]
    assert [e.data for e in events if e.event == "log"] == ["l0", "l1"]
    assert all(e.event != "end" for e in events)  # not ended: cut, to be resumed
    assert lasted < 8
    assert [e.data for e in after if e.event == "log"] == ["l2"]
    assert after[-1].event == "end"


def test_a_client_that_stops_reading_loses_its_slot(runtime: Runtime) -> None:
    """A client that reads nothing: the server's writes fill the socket, the write
    timeout closes the stream, and its slot is free again."""
    app = create_app(runtime, sse_write_timeout_seconds=1, heartbeat_seconds=0.3)
    execution_id = _execution(runtime)
    run_id = celery_id(runtime, execution_id)
    line = "x" * 4000
    for _ in range(40):  # 16 MB of log: more than the kernel buffers hold
        runtime.logbus.append(run_id, [line] * 100)
    with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            request = (
                f"GET /executions/{execution_id}/logs HTTP/1.1\r\nHost: {host}\r\n"
                f"X-API-Key: {KEY}\r\n\r\n"
            )
            sock.sendall(request.encode())
            wait_until(lambda: app.state.sse_streams == 1, timeout=5, message="the stream")
            wait_until(
                lambda: app.state.sse_streams == 0, timeout=20, message="the stalled stream closed"
            )
    assert app.state.sse_by_principal == {}
