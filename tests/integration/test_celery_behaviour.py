"""The Celery behaviour the library relies on, checked on plain Celery (docs/internals.md).

No ``dataforge_scheduler`` code runs here. Each worker test starts its own real
``celery worker`` (``-P prefork -c 1`` unless a point needs more) or ``celery beat`` of
``tests.integration.apps.celery_probe`` on the test's Redis, with the test's own broker
key prefix; the probe's signal handlers and Task hooks push events onto the test's own
Redis list, and the test asserts which events came, from which process, in which order.
Waits end on events, with explicit timeouts; every process is stopped by the fixture's
``finally``. Eager mode and the ``memory://`` broker are checked in-process.

Each test names its section of docs/internals.md; when Celery changes, the failing test
says which section (and which part of the library) to revisit.
"""

from __future__ import annotations

import contextvars
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, Task, signals
from tests.integration.apps.celery_probe import events, sender
from tests.integration.procs import REPO_ROOT, CeleryProcess, service_env, wait_until

APP = "tests.integration.apps.celery_probe"
SCHEDULER = f"{APP}:ProbeScheduler"
WAIT = 30.0

Event = dict[str, Any]


class Probe:
    """The test's environment, its processes and its recorded events."""

    def __init__(self, env: dict[str, str], client: redis.Redis, prefix: str, logs: Path):
        self.env = env
        self.redis = client
        self.prefix = prefix
        self.logs = logs
        self.started: list[CeleryProcess] = []
        self._sender: Celery | None = None
        self.main_pid: int | None = None

    # processes

    def worker(self, *args: str, **env: str) -> CeleryProcess:
        process = CeleryProcess(
            "worker",
            APP,
            env={**self.env, **env},
            log_path=self.logs / f"worker-{len(self.started)}.log",
            args=list(args or ("-P", "prefork", "-c", "1")),
        )
        self.started.append(process)
        process.start().wait_ready()
        self.main_pid = process.pid
        return process

    def beat(self, **env: str) -> CeleryProcess:
        process = CeleryProcess(
            "beat",
            APP,
            env={**self.env, **env},
            log_path=self.logs / f"beat-{len(self.started)}.log",
            args=["-S", SCHEDULER, "-s", str(self.logs / "celerybeat-schedule")],
        )
        self.started.append(process)
        return process.start().wait_ready()

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()
        if self._sender is not None:
            self._sender.close()

    # messages

    @property
    def app(self) -> Celery:
        if self._sender is None:
            self._sender = sender(self.env)
        return self._sender

    def send(self, name: str = "probe.run", **options: Any) -> str:
        return str(self.app.send_task(name, **options).id)

    def barrier(self) -> None:
        """Run one more task to its end: what a ``-c 1`` worker did before is over."""
        task_id = self.send(kwargs={"action": "ok"})
        self.wait_for("task_postrun", task_id)

    # events

    def events(self, task_id: str | None = None) -> list[Event]:
        found = events(self.redis, self.prefix)
        return found if task_id is None else [e for e in found if e.get("task_id") == task_id]

    def named(self, name: str, task_id: str | None = None, **fields: Any) -> list[Event]:
        return [
            e
            for e in self.events(task_id)
            if e["event"] == name and all(e.get(k) == v for k, v in fields.items())
        ]

    def wait_for(
        self, name: str, task_id: str | None = None, *, count: int = 1, **fields: Any
    ) -> list[Event]:
        return wait_until(
            lambda: (
                (found := self.named(name, task_id, **fields)) and len(found) >= count and found
            ),
            timeout=WAIT,
            message=f"{count} × {name} {fields} for {task_id}",
        )

    def in_child(self, task_id: str) -> list[Event]:
        """The task's events recorded by pool processes (not the worker's main process)."""
        return [e for e in self.events(task_id) if e["pid"] != self.main_pid]

    def in_main(self, task_id: str) -> list[Event]:
        return [e for e in self.events(task_id) if e["pid"] == self.main_pid]


def names(found: list[Event]) -> list[str]:
    return [e["event"] for e in found]


def position(found: list[Event], name: str, **fields: Any) -> int:
    for index, event in enumerate(found):
        if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
            return index
    raise AssertionError(f"no {name} {fields} in {names(found)}")


@pytest.fixture
def probe(
    redis_url: str, redis_client: redis.Redis, key_prefix: str, tmp_path: Path
) -> Iterator[Probe]:
    env = service_env(database_url="sqlite://", redis_url=redis_url, key_prefix=key_prefix)
    found = Probe(env, redis_client, key_prefix, tmp_path)
    try:
        yield found
    finally:
        found.stop_all()  # every worker and beat this test started, whatever happened


# ---------------------------------------------------------------- 1. which hooks run


@pytest.mark.worker
def test_after_return_is_skipped_for_retry_ignored_and_rejected_but_postrun_always_runs(
    probe: Probe,
) -> None:
    probe.worker()
    sent = {action: probe.send(kwargs={"action": action}) for action in ("ok", "fail", "retry")}
    sent |= {action: probe.send(kwargs={"action": action}) for action in ("ignore", "reject")}
    probe.wait_for("task_postrun", sent["retry"], count=2)
    probe.wait_for("task_failure", sent["reject"])
    probe.barrier()

    def child(action: str, name: str, field: str) -> list[Any]:
        return [e[field] for e in probe.in_child(sent[action]) if e["event"] == name]

    postrun = {action: child(action, "task_postrun", "state") for action in sent}
    after_return = {action: child(action, "after_return", "status") for action in sent}
    assert postrun == {
        "ok": ["SUCCESS"],
        "fail": ["FAILURE"],
        "retry": ["RETRY", "SUCCESS"],
        "ignore": ["IGNORED"],
        "reject": ["REJECTED"],
    }
    # the retrying attempt, Ignore and Reject get no after_return at all
    assert after_return == {
        "ok": ["SUCCESS"],
        "fail": ["FAILURE"],
        "retry": ["SUCCESS"],
        "ignore": [],
        "reject": [],
    }
    # a task_failure/task_success comes before the attempt's postrun, in the same process
    for action, outcome in (("ok", "task_success"), ("fail", "task_failure")):
        found = probe.in_child(sent[action])
        assert position(found, outcome) < position(found, "task_postrun")
    # Reject(requeue=False): the child says REJECTED, the main process then says failure
    assert [(e["event"], e.get("exception")) for e in probe.in_main(sent["reject"])] == [
        ("task_received", None),
        ("task_failure", "Reject"),
    ]


# ---------------------------------------------------------------- 2. retries overlap


@pytest.mark.worker
def test_a_retry_is_published_and_starts_before_the_old_attempt_ends(probe: Probe) -> None:
    probe.worker("-P", "prefork", "-c", "2")  # a second child to start the next attempt
    task_id = probe.send(kwargs={"action": "retry", "wait_for_next_attempt": True})
    probe.wait_for("task_postrun", task_id, retries=0)
    probe.wait_for("task_postrun", task_id, retries=1)

    found = probe.events(task_id)
    published = position(found, "after_task_publish", retries=1)
    new_prerun = position(found, "task_prerun", retries=1)
    old_on_retry = position(found, "on_retry", retries=0)
    old_task_retry = position(found, "task_retry", retries=0)
    old_postrun = position(found, "task_postrun", retries=0, state="RETRY")
    # countdown=0: the old attempt's on_retry waited (up to 15 s) for the new attempt to
    # start in the other child; had the message been sent after the hooks, it never would
    (waited,) = probe.named("on_retry_waited", task_id)
    assert waited["next_attempt_started"] is True
    assert published < new_prerun < old_on_retry < old_task_retry < old_postrun
    assert found[new_prerun]["pid"] != found[old_postrun]["pid"]
    old_publish_pid = found[published]["pid"]
    assert old_publish_pid == found[old_postrun]["pid"], "the old attempt's own child sent it"


# ---------------------------------------------------------------- 3. exceptions before the body


@pytest.mark.worker
def test_an_exception_in_before_start_is_a_failure_and_is_not_autoretried(probe: Probe) -> None:
    probe.worker()
    raised = probe.send(kwargs={"before_start": "raise"})  # ProbeError, in autoretry_for
    control = probe.send(kwargs={"action": "autoretry"})  # the same error from the body
    probe.wait_for("task_postrun", raised)
    probe.wait_for("task_postrun", control, count=2)
    probe.barrier()

    assert names(probe.in_child(raised)) == [
        "task_prerun",
        "before_start",
        "on_failure",
        "task_failure",
        "after_return",
        "task_postrun",
    ]
    assert probe.named("task_postrun", raised)[0]["state"] == "FAILURE"
    assert probe.named("task_failure", raised)[0]["exception"] == "ProbeError"
    assert probe.app.AsyncResult(raised).state == "FAILURE"
    # the control proves autoretry_for is live for this task: the body's error retried
    assert [e["retries"] for e in probe.named("task_prerun", control)] == [0, 1]
    assert len(probe.named("task_retry", control)) == 1


# ---------------------------------------------------------------- 4. Ignore


@pytest.mark.worker
def test_ignore_gives_only_task_postrun_ignored(probe: Probe) -> None:
    probe.worker()
    from_body = probe.send(kwargs={"action": "ignore"})
    from_before_start = probe.send(kwargs={"before_start": "ignore"})
    probe.wait_for("task_postrun", from_body)
    probe.wait_for("task_postrun", from_before_start)
    probe.barrier()

    assert names(probe.in_child(from_body)) == [
        "task_prerun",
        "before_start",
        "body",
        "task_postrun",
    ]
    assert names(probe.in_child(from_before_start)) == [
        "task_prerun",
        "before_start",
        "task_postrun",
    ]
    for task_id in (from_body, from_before_start):
        assert probe.named("task_postrun", task_id)[0]["state"] == "IGNORED"
        assert names(probe.in_main(task_id)) == ["task_received"]
        assert probe.app.AsyncResult(task_id).state == "PENDING", "nothing was stored"


# ---------------------------------------------------------------- 5. hard time limits


@pytest.mark.worker
@pytest.mark.slow
def test_a_hard_time_limit_kills_the_child_and_the_main_process_reports_it_twice(
    probe: Probe,
) -> None:
    worker = probe.worker()
    task_id = probe.send("probe.hard_limit")  # time_limit=2, the body sleeps 60 s
    (body,) = probe.wait_for("body", task_id)
    child = body["pid"]
    probe.wait_for("task_failure", task_id, count=2)
    wait_until(
        lambda: child not in worker.children() and len(worker.children()) == 1,
        timeout=WAIT,
        message="the pool to replace the timed-out child",
    )
    probe.barrier()

    main = probe.in_main(task_id)
    failures = [e for e in main if e["event"] == "task_failure"]
    assert [e["exception"] for e in failures] == ["TimeLimitExceeded", "TimeLimitExceeded"]
    # one of the two is sent with the request pushed, the other (and the Task hooks)
    # with an empty self.request: only the task_id argument is always right
    assert sorted(str(e["request_id"]) for e in failures) == sorted(["None", task_id])
    hooks = [(e["event"], e.get("status"), e.get("request_id")) for e in main]
    assert ("on_failure", None, None) in hooks
    assert ("after_return", "FAILURE", None) in hooks
    assert probe.app.AsyncResult(task_id).state == "FAILURE"
    assert "after_return" not in names(probe.in_child(task_id))


# ---------------------------------------------------------------- 6. a killed pool child


@pytest.mark.worker
@pytest.mark.slow
def test_a_sigkilled_pool_child_gives_only_task_failure_worker_lost_in_the_main_process(
    probe: Probe,
) -> None:
    worker = probe.worker()
    task_id = probe.send(kwargs={"action": "block"})
    (body,) = probe.wait_for("body", task_id)
    os.kill(body["pid"], signal.SIGKILL)
    probe.wait_for("task_failure", task_id)
    probe.barrier()  # runs in the replacement child

    assert names(probe.in_child(task_id)) == ["task_prerun", "before_start", "body"]
    main = probe.in_main(task_id)
    assert names(main) == ["task_received", "task_failure"]
    assert main[1]["exception"] == "WorkerLostError"
    assert worker.proc is not None
    assert worker.proc.poll() is None, "the main process survives its child"


# ---------------------------------------------------------------- 7. the run context


@pytest.mark.worker
def test_a_contextvar_set_in_prerun_reaches_the_body_and_leaks_unless_reset(
    probe: Probe,
) -> None:
    probe.worker()
    reset = probe.send(kwargs={"action": "context", "set_context": True, "reset_context": True})
    after_reset = probe.send(kwargs={"action": "context"})
    leaked = probe.send(kwargs={"action": "context", "set_context": True})
    after_leak = probe.send(kwargs={"action": "context"})
    probe.wait_for("task_postrun", after_leak)

    def seen(task_id: str) -> dict[str, Any]:
        (context,) = probe.named("context", task_id)
        return context["seen"]

    def before(task_id: str) -> Any:
        return probe.named("task_prerun", task_id)[0]["context_before"]

    everywhere = ("body", "coroutine", "to_thread")
    assert seen(reset) == dict.fromkeys(everywhere, reset)
    assert seen(leaked) == dict.fromkeys(everywhere, leaked)
    assert (before(after_reset), seen(after_reset)) == (None, dict.fromkeys(everywhere))
    # without the reset, the next task on the same process starts with the old value
    assert (before(after_leak), seen(after_leak)) == (leaked, dict.fromkeys(everywhere, leaked))
    pids = {
        e["pid"]
        for task_id in (reset, after_reset, leaked, after_leak)
        for e in probe.named("context", task_id)
    }
    assert len(pids) == 1, "all four ran in the same pool process"


# ---------------------------------------------------------------- 8. async bodies


@pytest.mark.worker
def test_an_async_def_body_is_never_awaited(probe: Probe) -> None:
    probe.worker()
    task_id = probe.send("probe.coroutine")
    (postrun,) = probe.wait_for("task_postrun", task_id)

    assert probe.named("body", task_id) == [], "the coroutine never ran"
    assert (postrun["state"], postrun["retval_type"]) == ("FAILURE", "EncodeError")
    result = probe.app.AsyncResult(task_id)
    assert result.state == "FAILURE"
    assert "coroutine" in str(result.result)


# ---------------------------------------------------------------- 9. custom headers


@pytest.mark.worker
def test_custom_headers_are_in_request_headers_and_attributes_and_survive_retry(
    probe: Probe,
) -> None:
    probe.worker()
    task_id = probe.send(kwargs={"action": "headers"}, headers={"probe_header": "slot-1"})
    probe.wait_for("task_postrun", task_id, count=2)

    seen = [(e["retries"], e["in_headers"], e["as_attribute"]) for e in probe.named("headers")]
    assert seen == [(0, "slot-1", "slot-1"), (1, "slot-1", "slot-1")]


# ---------------------------------------------------------------- 10. beat's loop


@pytest.mark.worker
def test_beat_sleeps_between_ticks_unless_tick_blocks_and_sigterm_closes_twice(
    probe: Probe,
) -> None:
    # tick 1 returns 1.5, tick 2 returns 0, ticks 3 and 4 wait inside tick() (60 s max)
    beat = probe.beat(PROBE_TICKS="1.5,0,wait")
    probe.wait_for("tick", number=3)
    woken_at = time.time()
    probe.redis.rpush(f"{probe.prefix}:wake", "1")
    probe.wait_for("tick", number=4)

    assert beat.proc is not None
    stopped_at = time.monotonic()
    os.killpg(beat.pid, signal.SIGTERM)
    beat.proc.wait(timeout=WAIT)
    assert time.monotonic() - stopped_at < 10, "SIGTERM cuts the wait inside tick() short"

    found = [e for e in probe.events() if e["event"] not in {"wake_received"}]
    assert [(e["event"], e.get("number") or e.get("seconds")) for e in found] == [
        ("tick", 1),
        ("loop_sleep", 1.5),  # beat's own time.sleep(interval) after a positive return
        ("tick", 2),
        ("tick", 3),  # no sleep after a 0 return
        ("tick_wait_ended", 3),
        ("tick", 4),
        ("close", None),  # from beat's SIGTERM handler
        ("close", None),  # and again from the loop's finally
    ]
    tick = {e["number"]: e["at"] for e in found if e["event"] == "tick"}
    assert tick[2] - tick[1] >= 1.45
    ended = found[4]
    assert ended["woken"] is True
    assert ended["at"] >= woken_at, "tick 3 waited inside tick() until it was woken"
    assert tick[4] - ended["at"] < 1.0


# ---------------------------------------------------------------- 11. visibility timeout


@pytest.mark.worker
@pytest.mark.slow
def test_redis_redelivers_an_unacked_message_after_the_visibility_timeout(probe: Probe) -> None:
    probe.worker(PROBE_VISIBILITY_TIMEOUT="1")  # restore sweep every 0.5 s
    task_id = probe.send("probe.late", kwargs={"seconds": 4})  # acks_late: unacked while it runs
    probe.wait_for("body", task_id, redelivered=True)

    found = probe.events(task_id)
    bodies = [e for e in found if e["event"] == "body"]
    assert bodies[0]["redelivered"] is False
    assert all(e["redelivered"] for e in bodies[1:])
    first_body = position(found, "body", redelivered=False)
    first_end = position(found, "task_postrun")
    received = [i for i, e in enumerate(found) if e["event"] == "task_received"]
    assert len(received) >= 2
    assert first_body < received[1] < first_end, "the copy arrived while the first still ran"
    assert {e["retries"] for e in found if e["event"] == "task_prerun"} == {0}


# ---------------------------------------------------------------- 12. process init


@pytest.mark.worker
@pytest.mark.parametrize(
    ("pool", "fires"), [("prefork", True), ("threads", False)], ids=["prefork", "threads"]
)
def test_worker_process_init_fires_in_prefork_children_but_not_in_the_threads_pool(
    probe: Probe, pool: str, fires: bool
) -> None:
    probe.worker("-P", pool, "-c", "1")
    task_id = probe.send(kwargs={"action": "ok"})
    (postrun,) = probe.wait_for("task_postrun", task_id)

    inits = probe.named("worker_process_init")
    if fires:
        assert [e["pid"] for e in inits] == [postrun["pid"]]
        assert postrun["pid"] != probe.main_pid
    else:
        assert inits == []
        assert postrun["pid"] == probe.main_pid


# ---------------------------------------------------------------- 13. the memory broker

_PUBLISH_IN_ANOTHER_PROCESS = """
import sys
from celery import Celery
app = Celery("probe-memory", broker="memory://localhost/")
with app.connection_for_write() as conn:
    box = conn.SimpleQueue(sys.argv[1])
    box.put({"from": "another process"})
    print(box.qsize())
    box.close()
"""


def test_the_memory_broker_delivers_between_threads_but_not_between_processes() -> None:
    app = Celery("probe-memory", broker="memory://localhost/", set_as_current=False)
    name = f"probe-{uuid.uuid4().hex[:8]}"

    def publish() -> None:
        with app.connection_for_write() as conn:
            box = conn.SimpleQueue(name)
            box.put({"from": "a thread"})
            box.close()

    with app.connection_for_read() as conn:
        box = conn.SimpleQueue(name)
        try:
            publisher = threading.Thread(target=contextvars.copy_context().run, args=(publish,))
            publisher.start()
            publisher.join(timeout=WAIT)
            assert box.get(timeout=5).payload == {"from": "a thread"}

            other = subprocess.run(
                [sys.executable, "-c", _PUBLISH_IN_ANOTHER_PROCESS, name],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=WAIT,
                check=False,
            )
            assert other.returncode == 0, other.stderr
            assert other.stdout.split() == ["1"], "it sees its own message"
            assert box.qsize() == 0
            with pytest.raises(queue.Empty):
                box.get(block=False)
        finally:
            box.close()
    app.close()


# ---------------------------------------------------------------- 14. eager mode


def test_eager_mode_skips_failure_hooks_ignores_countdowns_and_has_no_header_attributes() -> None:
    app = Celery("probe-eager", broker="memory://localhost/", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    seen: list[tuple[Any, ...]] = []

    class Recorded(Task):
        def on_failure(self, exc: Any, task_id: str, *args: Any) -> None:
            seen.append(("on_failure",))

        def after_return(self, status: str, *args: Any) -> None:
            seen.append(("after_return", status))

    @app.task(base=Recorded, bind=True, name="eager.fail", shared=False)
    def fail(self: Task) -> None:
        raise ValueError("eager failure")

    @app.task(base=Recorded, bind=True, name="eager.retry", shared=False)
    def retry(self: Task) -> str:
        request = self.request
        seen.append(("body", request.retries, (request.headers or {}).get("probe_header")))
        seen.append(("attribute", getattr(request, "probe_header", None)))
        if request.retries == 0:
            raise self.retry(countdown=600)
        return "done"

    def ours(sender: Any) -> bool:
        return getattr(sender, "app", None) is app

    def on_failure(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            seen.append(("task_failure",))

    def on_postrun(sender: Any = None, state: Any = None, **_: Any) -> None:
        if ours(sender):
            seen.append(("task_postrun", state))

    signals.task_failure.connect(on_failure, weak=False, dispatch_uid="probe.eager.failure")
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid="probe.eager.postrun")
    try:
        with pytest.raises(ValueError, match="eager failure"):
            fail.delay()
        assert seen == [("task_postrun", None)], "no on_failure, task_failure, after_return"

        seen.clear()
        app.conf.task_eager_propagates = False
        started = time.monotonic()
        result = retry.apply_async(headers={"probe_header": "slot-1"})
        assert result.get() == "done"
        assert time.monotonic() - started < 60, "the 600 s countdown was not waited"
        assert [s for s in seen if s[0] in {"body", "attribute"}] == [
            ("body", 0, "slot-1"),
            ("attribute", None),
            ("body", 1, "slot-1"),
            ("attribute", None),
        ]
        # the attempts run one after the other, inline: no overlap as in a worker
        assert seen.index(("task_postrun", "RETRY")) < seen.index(("body", 1, "slot-1"))

        seen.clear()
        assert fail.delay().state == "FAILURE"  # without propagation the hooks do run
        assert seen == [
            ("on_failure",),
            ("task_failure",),
            ("after_return", "FAILURE"),
            ("task_postrun", "FAILURE"),
        ]
    finally:
        signals.task_failure.disconnect(dispatch_uid="probe.eager.failure")
        signals.task_postrun.disconnect(dispatch_uid="probe.eager.postrun")
        app.close()


# ---------------------------------------------------------------- 15. a task's own time limit


@pytest.mark.worker
@pytest.mark.slow
def test_a_task_time_limit_alone_is_not_enforced_under_a_longer_app_soft_limit(
    probe: Probe,
) -> None:
    worker = probe.worker(PROBE_SOFT_TIME_LIMIT="60", PROBE_TIME_LIMIT="120")
    own = probe.send("probe.own_limit", kwargs={"seconds": 6})  # time_limit=2 only
    both = probe.send("probe.both_limits", kwargs={"seconds": 6})  # time_limit=2, soft 1
    probe.wait_for("task_postrun", own)
    probe.wait_for("task_failure", both, count=2)

    # time_limit=2 alone: the soft limit is the app's 60 s, and the hard timer is armed
    # only when that fires, so the body slept its 6 s and ended normally
    (body,) = probe.named("body", own)
    assert (body["time_limit"], body["soft_time_limit"]) == (2, 60)
    (finished,) = probe.named("finished", own)
    assert finished["elapsed"] >= 5.9
    assert finished["pid"] == body["pid"], "the child was never replaced"
    assert [e["state"] for e in probe.named("task_postrun", own)] == ["SUCCESS"]
    assert probe.named("task_failure", own) == []
    assert probe.named("soft_limit", own) == []
    # time_limit=2 with soft_time_limit=1: the body caught the soft limit and slept on;
    # the hard limit, armed when the soft one fired, stopped it in the same child
    (child,) = probe.named("body", both)
    assert child["pid"] == body["pid"]
    assert (child["time_limit"], child["soft_time_limit"]) == (2, 1)
    assert len(probe.named("soft_limit", both)) == 1
    assert probe.named("finished", both) == [], "stopped before its 6 s sleep ended"
    failures = [e for e in probe.in_main(both) if e["event"] == "task_failure"]
    assert [e["exception"] for e in failures] == ["TimeLimitExceeded", "TimeLimitExceeded"]
    wait_until(
        lambda: child["pid"] not in worker.children(),
        timeout=WAIT,
        message="the timed-out child to be gone",
    )


# ---------------------------------------------------------------- 16. a lost child, requeued


@pytest.mark.worker
@pytest.mark.slow
def test_a_lost_child_with_reject_on_worker_lost_requeues_without_task_failure(
    probe: Probe,
) -> None:
    probe.worker()  # the default visibility timeout (1 h): no restore sweep redelivers
    task_id = probe.send("probe.lost", retries=2)  # acks_late, reject_on_worker_lost
    (first,) = probe.wait_for("body", task_id, redelivered=False)
    os.kill(first["pid"], signal.SIGKILL)
    (copy,) = probe.wait_for("body", task_id, redelivered=True)
    probe.wait_for("task_postrun", task_id, state="SUCCESS")
    probe.barrier()  # the main process has long finished with the lost child

    assert (first["retries"], copy["retries"]) == (2, 2), "the same attempt, run again"
    assert copy["pid"] != first["pid"], "in the child that replaced the killed one"
    assert probe.named("task_failure", task_id) == [], "no task_failure at all"
    assert probe.named("task_retry", task_id) == []
    assert names(probe.in_main(task_id)) == ["task_received", "task_received"]
    first_run = [e for e in probe.in_child(task_id) if e["pid"] == first["pid"]]
    assert names(first_run) == ["task_prerun", "before_start", "body"]
    assert probe.app.AsyncResult(task_id).state == "SUCCESS"


# ---------------------------------------------------------------- 17. the sender and results


@pytest.mark.worker
def test_a_sender_subscribes_to_each_result_unless_told_to_ignore_it_and_the_header_rules(
    probe: Probe,
) -> None:
    probe.worker()
    plain = sender(probe.env)
    quiet = sender(probe.env)
    try:
        plain_id = str(plain.send_task("probe.run", kwargs={"action": "ok"}).id)
        quiet_id = str(
            quiet.send_task(
                "probe.run",
                kwargs={"action": "ok"},
                ignore_result=True,
                headers={"ignore_result": None},
            ).id
        )
        probe.wait_for("task_postrun", plain_id)
        probe.wait_for("task_postrun", quiet_id)

        assert plain.backend.result_consumer._pubsub is not None, "send_task subscribed"
        assert quiet.backend.result_consumer._pubsub is None, "never subscribed"
        stored = wait_until(
            lambda: probe.app.AsyncResult(quiet_id).state == "SUCCESS" or None,
            timeout=WAIT,
            message="the result of the run sent with ignore_result=True",
        )
        assert stored
        assert probe.app.AsyncResult(plain_id).state == "SUCCESS"
    finally:
        plain.close()
        quiet.close()
