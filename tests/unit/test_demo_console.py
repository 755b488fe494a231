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
from tests.runs import finish, start

from dataforge_scheduler.core.clock import ManualClock
from dataforge_scheduler.core.enums import ExecutionStatus, ExecutionTrigger
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.demo.console import Console, NarratingDispatcher, RunNarrator
from dataforge_scheduler.errors import BackendUnavailable
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql.models import create_all
from dataforge_scheduler.testing import RecordingDispatcher

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
        row = start(
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
        finish(session, celery_task_id=celery_id, status=status, now=START, **fields)


def test_console_lines_are_timestamped_and_aligned() -> None:
    out = io.StringIO()
    console = Console(out)
    console.line("log", "demo.heartbeat #4", "hello")
    console.line("dispatch", "demo.report", "run #5")
    lines = out.getvalue().splitlines()
    assert re.match(r"^\d\d:\d\d:\d\d  log      demo\.heartbeat #4\s+hello$", lines[0])
    assert lines[0].index("hello") == lines[1].index("run #5")  # columns line up


def _slot(execution_id: int, task_name: str, *, slot: datetime | None, trigger: str) -> ClaimedSlot:
    return ClaimedSlot(
        execution_id=execution_id,
        celery_task_id=f"t-{execution_id}",
        scheduled_task_id=1,
        schedule_name="s",
        task_name=task_name,
        scheduled_for=slot,
        kwargs={"scheduled_task_id": 1},
        trigger=ExecutionTrigger(trigger),
    )


def test_dispatches_are_passed_on_then_shown() -> None:
    out, inner = io.StringIO(), RecordingDispatcher()
    dispatcher = NarratingDispatcher(inner, Console(out))
    slot = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    dispatcher.dispatch(_slot(7, "demo.heartbeat", slot=slot, trigger="schedule"))
    dispatcher.dispatch(_slot(8, "demo.report", slot=None, trigger="manual"))
    assert [sent.task_id for sent in inner.sent] == ["t-7", "t-8"]
    local = slot.astimezone().strftime("%H:%M:%S")
    assert parsed(out) == [
        ("dispatch", "demo.heartbeat", f"run #7 (schedule, the {local} slot)"),
        ("dispatch", "demo.report", "run #8 (manual)"),
    ]


def test_a_refused_send_is_not_shown() -> None:
    inner = RecordingDispatcher()
    inner.down = True
    out = io.StringIO()
    with pytest.raises(BackendUnavailable):
        NarratingDispatcher(inner, Console(out)).dispatch(
            _slot(1, "x", slot=None, trigger="manual")
        )
    assert out.getvalue() == ""


def test_a_run_is_narrated_from_start_to_outcome(runtime: Runtime) -> None:
    out = io.StringIO()
    narrator = RunNarrator(runtime, Console(out))
    execution_id, celery_id = start_row(runtime)
    narrator.follow(celery_id, "demo.heartbeat", execution_id=execution_id)
    runtime.logbus.append(celery_id, ["hello", "halfway"])
    narrator.poll()
    runtime.logbus.append(celery_id, ["done"])
    runtime.logbus.finish(celery_id, "success", ttl=60)
    narrator.poll()  # the log ended, the row not yet: the outcome waits for the row
    assert [kind for kind, _, _ in parsed(out)] == ["start", "log", "log", "log"]
    finish_row(runtime, celery_id, ExecutionStatus.SUCCESS, result={"n": 1})
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
    narrator.follow(celery_id, "demo.report", execution_id=execution_id)
    finish_row(runtime, celery_id, ExecutionStatus.FAILED, error="ValueError: boom")
    runtime.logbus.finish(celery_id, "failed", ttl=60)
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
    execution_id, celery_id = start_row(runtime)
    narrator.follow(celery_id, "demo.heartbeat", execution_id=execution_id)
    runtime.logbus.append(celery_id, ["attempt 1"])
    narrator.follow(celery_id, "demo.heartbeat", execution_id=execution_id)  # retry's prerun
    runtime.logbus.append(celery_id, ["attempt 2"])
    narrator.poll()
    logs = [text for kind, _, text in parsed(out) if kind == "log"]
    assert logs == ["attempt 1", "attempt 2"]  # each line once, none lost
    narrator.stop()


def test_the_thread_shows_what_arrived_before_stop(runtime: Runtime) -> None:
    out = io.StringIO()
    narrator = RunNarrator(runtime, Console(out), poll_seconds=60).start()
    execution_id, celery_id = start_row(runtime)
    narrator.follow(celery_id, "demo.heartbeat", execution_id=execution_id)
    runtime.logbus.append(celery_id, ["late line"])
    narrator.stop()
    assert ("log", f"demo.heartbeat #{execution_id}", "late line") in parsed(out)
    narrator.stop()  # twice is fine
