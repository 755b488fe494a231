"""What the demo shows: timestamped lines, every dispatch, each run's live log and outcome."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.headers import EXECUTION_ID, SLOT, TRIGGER
from dataforge_scheduler.demo.console import Console, NarratingDispatcher, RunNarrator
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import create_all

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LINE = re.compile(r"^\d\d:\d\d:\d\d  (?P<kind>\S+)\s+(?P<subject>.+?)\s{2,}(?P<text>.*)$")


def parsed(stream: io.StringIO) -> list[tuple[str, str, str]]:
    rows = []
    for line in stream.getvalue().splitlines():
        match = LINE.match(line)
        assert match, f"not a console line: {line!r}"
        rows.append((match["kind"], match["subject"].strip(), match["text"]))
    return rows


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'demo.db'}",
        redis_url="memory://",
        celery_broker_url="memory://",
        celery_result_backend="cache+memory://",
    )
    rt = Runtime(settings, registry=TaskRegistry(), clock=ManualClock(START))
    create_all(rt.engine)
    yield rt
    rt.close()


def start_row(runtime: Runtime, task_name: str = "demo.heartbeat") -> tuple[int, str]:
    celery_id = str(uuid.uuid4())
    with runtime.session() as session:
        row = store.start_execution(
            session,
            celery_task_id=celery_id,
            task_name=task_name,
            scheduled_task_id=None,
            trigger="manual",
            worker_hostname="h",
            worker_pid=1,
            kwargs={},
            retries=0,
            now=START,
        )
        assert row is not None
        return row.id, celery_id


def finish_row(runtime: Runtime, celery_id: str, status: ExecutionStatus, **fields: Any) -> None:
    with runtime.session() as session:
        store.finish_execution(
            session, celery_task_id=celery_id, status=status, now=START, **fields
        )


def test_console_lines_are_timestamped_and_aligned() -> None:
    out = io.StringIO()
    console = Console(out)
    console.line("log", "demo.heartbeat #4", "hello")
    console.line("dispatch", "demo.report", "run #5")
    lines = out.getvalue().splitlines()
    assert re.match(r"^\d\d:\d\d:\d\d  log      demo\.heartbeat #4\s+hello$", lines[0])
    assert lines[0].index("hello") == lines[1].index("run #5")  # columns line up


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, task_name: str, **kwargs: Any) -> None:
        self.sent.append({"task_name": task_name, **kwargs})


def test_dispatches_are_passed_on_then_shown() -> None:
    out, inner = io.StringIO(), Recorder()
    dispatcher = NarratingDispatcher(inner, Console(out))
    slot = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    dispatcher.send(
        "demo.heartbeat",
        kwargs={"scheduled_task_id": 1},
        task_id="t-1",
        headers={TRIGGER: "schedule", SLOT: slot.isoformat(), EXECUTION_ID: 7},
    )
    dispatcher.send("demo.report", kwargs={}, task_id="t-2", headers={TRIGGER: "manual"})
    assert [sent["task_id"] for sent in inner.sent] == ["t-1", "t-2"]
    local = slot.astimezone().strftime("%H:%M:%S")
    assert parsed(out) == [
        ("dispatch", "demo.heartbeat", f"run #7 (schedule, the {local} slot)"),
        ("dispatch", "demo.report", "task id t-2 (manual)"),
    ]


def test_a_refused_send_is_not_shown() -> None:
    class Refusing:
        def send(self, task_name: str, **kwargs: Any) -> None:
            raise ConnectionError("broker down")

    out = io.StringIO()
    with pytest.raises(ConnectionError):
        NarratingDispatcher(Refusing(), Console(out)).send("x", kwargs={}, task_id="t")
    assert out.getvalue() == ""


def test_a_run_is_narrated_from_start_to_outcome(runtime: Runtime) -> None:
    out = io.StringIO()
    narrator = RunNarrator(runtime, Console(out))
    execution_id, celery_id = start_row(runtime)
    narrator.follow(execution_id, "demo.heartbeat")
    runtime.logbus.append(execution_id, ["hello", "halfway"])
    narrator.poll()
    runtime.logbus.append(execution_id, ["done"])
    finish_row(runtime, celery_id, ExecutionStatus.SUCCESS, result={"n": 1})
    runtime.logbus.finish(execution_id, "success", ttl=60)
    narrator.poll()
    subject = f"demo.heartbeat #{execution_id}"
    rows = parsed(out)
    assert rows[:4] == [
        ("start", "demo.heartbeat", f"run #{execution_id}"),
        ("log", subject, "hello"),
        ("log", subject, "halfway"),
        ("log", subject, "done"),
    ]
    kind, who, text = rows[4]
    assert (kind, who) == ("success", subject)
    assert text.endswith('result {"n": 1}')
    assert narrator.outcomes == {"success": 1}
    narrator.poll()  # the run is no longer followed: nothing more is shown
    assert len(parsed(out)) == 5
    narrator.stop()


def test_a_failed_run_shows_its_error(runtime: Runtime) -> None:
    out = io.StringIO()
    narrator = RunNarrator(runtime, Console(out))
    execution_id, celery_id = start_row(runtime, "demo.report")
    narrator.follow(execution_id, "demo.report")
    finish_row(runtime, celery_id, ExecutionStatus.FAILED, error="ValueError: boom")
    runtime.logbus.finish(execution_id, "failed", ttl=60)
    narrator.poll()
    assert parsed(out)[-1] == (
        "failed",
        f"demo.report #{execution_id}",
        "after 0.00 s: ValueError: boom",  # started and finished at the same instant
    )
    assert narrator.outcomes == {"failed": 1}
    narrator.stop()


def test_a_retry_keeps_following_the_same_feed(runtime: Runtime) -> None:
    out = io.StringIO()
    narrator = RunNarrator(runtime, Console(out))
    execution_id, _ = start_row(runtime)
    narrator.follow(execution_id, "demo.heartbeat")
    runtime.logbus.append(execution_id, ["attempt 1"])
    narrator.follow(execution_id, "demo.heartbeat")  # the retry's prerun
    runtime.logbus.append(execution_id, ["attempt 2"])
    narrator.poll()
    logs = [text for kind, _, text in parsed(out) if kind == "log"]
    assert logs == ["attempt 1", "attempt 2"]  # each line once, none lost
    narrator.stop()


def test_the_thread_shows_what_arrived_before_stop(runtime: Runtime) -> None:
    out = io.StringIO()
    narrator = RunNarrator(runtime, Console(out), poll_seconds=60).start()
    execution_id, _ = start_row(runtime)
    narrator.follow(execution_id, "demo.heartbeat")
    runtime.logbus.append(execution_id, ["late line"])
    narrator.stop()
    assert ("log", f"demo.heartbeat #{execution_id}", "late line") in parsed(out)
    narrator.stop()  # twice is fine
