"""Plain Celery (no dataforge) that records what Celery does, for ``test_celery_behaviour``.

``celery -A tests.integration.apps.celery_probe worker|beat`` reads ``app``, built on
first access from the environment ``procs.service_env`` made: the broker and result
backend are the test's Redis with the test's own broker key prefix, and every event is
pushed as JSON onto ``<key_prefix>:events`` (``events_key``), so each test reads only
its own. An event says what happened (``event``), in which process (``pid``), for which
task id, and what the hook saw (state, retries, exception type, ``self.request.id``...).
Redis orders the pushes of every process (main, pool children, beat) in one list.

Nothing here imports ``dataforge_scheduler``: the tests check Celery itself. The test
process never builds ``app`` (it would connect the recording handlers in pytest); it
sends with ``sender(env)``.

``probe.run`` does what its ``action`` kwarg says (``ok``, ``fail``, ``autoretry``,
``retry``, ``ignore``, ``reject``, ``block``, ``context``, ``headers``); its
``before_start`` raises when ``before_start`` is ``raise`` or ``ignore``. ``ProbeScheduler``
is a beat scheduler whose ``tick()`` follows ``PROBE_TICKS`` (see its docstring).
``PROBE_VISIBILITY_TIMEOUT`` sets the broker's visibility timeout, ``PROBE_SOFT_TIME_LIMIT``
and ``PROBE_TIME_LIMIT`` the app-wide ``task_soft_time_limit`` and ``task_time_limit``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any

import redis
from celery import Celery, Task, signals
from celery.beat import Scheduler
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

__all__ = [
    "EVENTS_SUFFIX",
    "ProbeError",
    "ProbeScheduler",
    "build_app",
    "events",
    "events_key",
    "sender",
]

EVENTS_SUFFIX = "events"
PROBE_HEADER = "probe_header"
RUN_CONTEXT: ContextVar[str | None] = ContextVar("probe_run", default=None)
_TOKENS: dict[str, Token[str | None]] = {}
_CLIENTS: dict[int, redis.Redis] = {}


class ProbeError(Exception):
    """The only exception ``probe.run`` auto-retries."""


def events_key(key_prefix: str) -> str:
    return f"{key_prefix}:{EVENTS_SUFFIX}"


def events(client: redis.Redis, key_prefix: str) -> list[dict[str, Any]]:
    """Every event recorded so far, in the order Redis received them."""
    return [json.loads(item) for item in client.lrange(events_key(key_prefix), 0, -1)]


def _broker_options(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"global_keyprefix": env["DATAFORGE_TEST_BROKER_PREFIX"]}
    visibility = env.get("PROBE_VISIBILITY_TIMEOUT")
    if visibility:
        options.update(
            visibility_timeout=float(visibility),
            unacked_restore_interval=0.5,
            unacked_restore_throttle=1,
        )
    return options


def sender(env: Mapping[str, str]) -> Celery:
    """An app that only publishes to (and reads results from) the test's broker keys."""
    app = Celery("probe-sender", broker=env["DATAFORGE_CELERY_BROKER_URL"])
    app.conf.result_backend = env["DATAFORGE_CELERY_RESULT_BACKEND"]
    app.conf.broker_transport_options = _broker_options(env)
    app.conf.result_backend_transport_options = {
        "global_keyprefix": env["DATAFORGE_TEST_BROKER_PREFIX"]
    }
    return app


class _Recorder:
    """Pushes events onto the test's list, one Redis client per process."""

    def __init__(self, redis_url: str, key: str) -> None:
        self.redis_url = redis_url
        self.key = key

    def __call__(self, event: str, **fields: Any) -> None:
        client = _CLIENTS.get(os.getpid())
        if client is None:
            client = _CLIENTS[os.getpid()] = redis.Redis.from_url(self.redis_url)
        entry = {"event": event, "pid": os.getpid(), "at": time.time(), **fields}
        client.rpush(self.key, json.dumps(entry, default=repr))

    def seen(self, event: str, task_id: str, **fields: Any) -> bool:
        client = _CLIENTS.get(os.getpid()) or redis.Redis.from_url(self.redis_url)
        for raw in client.lrange(self.key, 0, -1):
            item = json.loads(raw)
            wanted = {"event": event, "task_id": task_id, **fields}
            if all(item.get(name) == value for name, value in wanted.items()):
                return True
        return False


def _request_id(task: Any) -> Any:
    request = getattr(task, "request", None)
    return getattr(request, "id", None)


def build_app(env: Mapping[str, str]) -> Celery:
    """The probe app with its recording hooks; only for the worker and beat processes."""
    app = Celery("celery_probe", broker=env["DATAFORGE_CELERY_BROKER_URL"])
    app.conf.result_backend = env["DATAFORGE_CELERY_RESULT_BACKEND"]
    app.conf.broker_transport_options = _broker_options(env)
    app.conf.result_backend_transport_options = {
        "global_keyprefix": env["DATAFORGE_TEST_BROKER_PREFIX"]
    }
    app.conf.worker_hijack_root_logger = False
    if env.get("PROBE_SOFT_TIME_LIMIT"):
        app.conf.task_soft_time_limit = float(env["PROBE_SOFT_TIME_LIMIT"])
    if env.get("PROBE_TIME_LIMIT"):
        app.conf.task_time_limit = float(env["PROBE_TIME_LIMIT"])
    record = _Recorder(env["DATAFORGE_REDIS_URL"], events_key(env["DATAFORGE_KEY_PREFIX"]))
    app.conf.probe_record = record
    _define_tasks(app, record)
    _Handlers(app, record).connect()
    return app


class ProbeTask(Task):
    """Records every Task hook it has; ``before_start`` can raise on request."""

    def _record(self, event: str, task_id: str, **fields: Any) -> None:
        self.app.conf.probe_record(
            event,
            task_id=task_id,
            request_id=_request_id(self),
            retries=getattr(self.request, "retries", None),
            **fields,
        )

    def before_start(self, task_id: str, args: Any, kwargs: dict[str, Any]) -> None:
        self._record("before_start", task_id)
        if kwargs.get("before_start") == "raise":
            raise ProbeError("raised in before_start")
        if kwargs.get("before_start") == "ignore":
            raise Ignore()

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self._record("on_success", task_id)

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self._record("on_failure", task_id, exception=type(exc).__name__)

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # what this hook waits for (``wait_for_next_attempt``) tells how far Celery got
        # with the next attempt before this one reached its retry hooks
        if kwargs.get("wait_for_next_attempt"):
            found = _wait(
                lambda: self.app.conf.probe_record.seen(
                    "task_prerun", task_id, retries=self.request.retries + 1
                ),
                timeout=15,
            )
            self._record("on_retry_waited", task_id, next_attempt_started=found)
        self._record("on_retry", task_id)

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self._record("after_return", task_id, status=status)


def _wait(condition: Any, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _read_context() -> dict[str, Any]:
    """The run ContextVar as the body, a coroutine and a to_thread thread see it."""

    async def in_coroutine() -> dict[str, Any]:
        return {
            "coroutine": RUN_CONTEXT.get(),
            "to_thread": await asyncio.to_thread(RUN_CONTEXT.get),
        }

    return {"body": RUN_CONTEXT.get(), **asyncio.run(in_coroutine())}


def _body_fails(task: Task, kwargs: dict[str, Any]) -> None:
    raise ValueError("the body failed")


def _body_autoretries(task: Task, kwargs: dict[str, Any]) -> None:
    raise ProbeError("raised in the body")


def _body_retries_once(task: Task, kwargs: dict[str, Any]) -> None:
    if task.request.retries == 0:
        raise task.retry(countdown=0)


def _body_ignores(task: Task, kwargs: dict[str, Any]) -> None:
    raise Ignore()


def _body_rejects(task: Task, kwargs: dict[str, Any]) -> None:
    raise Reject("rejected by the body", requeue=False)


def _body_blocks(task: Task, kwargs: dict[str, Any]) -> None:
    time.sleep(float(kwargs.get("seconds", 60)))  # until the test kills the process


def _body_reads_context(task: Task, kwargs: dict[str, Any]) -> None:
    task.app.conf.probe_record("context", task_id=task.request.id, seen=_read_context())


def _body_reads_headers(task: Task, kwargs: dict[str, Any]) -> None:
    request = task.request
    task.app.conf.probe_record(
        "headers",
        task_id=request.id,
        retries=request.retries,
        in_headers=(request.headers or {}).get(PROBE_HEADER),
        as_attribute=getattr(request, PROBE_HEADER, None),
    )
    _body_retries_once(task, kwargs)


ACTIONS = {
    "ok": lambda task, kwargs: None,
    "fail": _body_fails,
    "autoretry": _body_autoretries,
    "retry": _body_retries_once,
    "ignore": _body_ignores,
    "reject": _body_rejects,
    "block": _body_blocks,
    "context": _body_reads_context,
    "headers": _body_reads_headers,
}


def _sleep_past_limits(task: Task, record: _Recorder, seconds: float) -> None:
    """Sleep ``seconds``, through a soft time limit; record the start, the soft limit, the end."""
    task_id = task.request.id
    started = time.monotonic()
    record(
        "body",
        task_id=task_id,
        time_limit=task.time_limit,
        soft_time_limit=task.soft_time_limit,
    )
    while (left := started + seconds - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeLimitExceeded:
            # caught, so only the hard limit can stop the body now
            record("soft_limit", task_id=task_id, elapsed=time.monotonic() - started)
    record("finished", task_id=task_id, elapsed=time.monotonic() - started)


def _define_tasks(app: Celery, record: _Recorder) -> None:
    @app.task(
        base=ProbeTask,
        bind=True,
        name="probe.run",
        autoretry_for=(ProbeError,),
        max_retries=1,
        retry_kwargs={"countdown": 0},
    )
    def run(self: ProbeTask, action: str = "ok", **kwargs: Any) -> Any:
        record("body", task_id=self.request.id, retries=self.request.retries, action=action)
        ACTIONS[action](self, kwargs)
        return action

    @app.task(base=ProbeTask, bind=True, name="probe.hard_limit", time_limit=2)
    def hard_limit(self: Task) -> None:
        record("body", task_id=self.request.id)
        time.sleep(60)  # the 2 s hard limit stops it

    @app.task(base=ProbeTask, bind=True, name="probe.late", acks_late=True)
    def late(self: Task, seconds: float = 6) -> None:
        delivery = self.request.delivery_info or {}
        redelivered = bool(delivery.get("redelivered"))
        record("body", task_id=self.request.id, redelivered=redelivered)
        if not redelivered:
            time.sleep(seconds)  # a long run, unacknowledged until it ends

    @app.task(base=ProbeTask, bind=True, name="probe.own_limit", time_limit=2)
    def own_limit(self: Task, seconds: float = 6) -> None:
        # only time_limit: its soft_time_limit comes from the app's task_soft_time_limit
        _sleep_past_limits(self, record, seconds)

    @app.task(base=ProbeTask, bind=True, name="probe.both_limits", time_limit=2, soft_time_limit=1)
    def both_limits(self: Task, seconds: float = 6) -> None:
        _sleep_past_limits(self, record, seconds)

    @app.task(
        base=ProbeTask,
        bind=True,
        name="probe.lost",
        acks_late=True,
        reject_on_worker_lost=True,
    )
    def lost(self: Task) -> None:
        delivery = self.request.delivery_info or {}
        redelivered = bool(delivery.get("redelivered"))
        record(
            "body",
            task_id=self.request.id,
            retries=self.request.retries,
            redelivered=redelivered,
        )
        if not redelivered:
            time.sleep(60)  # until the test kills this child

    @app.task(base=ProbeTask, bind=True, name="probe.coroutine")
    async def coroutine(self: Task) -> str:
        record("body", task_id=self.request.id)
        return "awaited"


class _Handlers:
    """The probe's signal receivers: each records what its signal told it."""

    def __init__(self, app: Celery, record: _Recorder) -> None:
        self.app = app
        self.record = record

    def connect(self) -> None:
        receivers = {
            signals.task_received: self.on_received,
            signals.task_prerun: self.on_prerun,
            signals.task_postrun: self.on_postrun,
            signals.task_success: self.on_success,
            signals.task_failure: self.on_failure,
            signals.task_retry: self.on_retry,
            signals.after_task_publish: self.on_published,
            signals.worker_process_init: self.on_process_init,
        }
        for signal, receiver in receivers.items():
            signal.connect(receiver, weak=False, dispatch_uid=f"probe.{receiver.__name__}")

    def ours(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app

    def on_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        self.record("task_received", task_id=request.id)

    def on_prerun(
        self, sender: Any = None, task_id: str = "", kwargs: Any = None, **_: Any
    ) -> None:
        if not self.ours(sender):
            return
        before = RUN_CONTEXT.get()
        if (kwargs or {}).get("set_context"):
            _TOKENS[task_id] = RUN_CONTEXT.set(task_id)
        self.record(
            "task_prerun",
            task_id=task_id,
            retries=sender.request.retries,
            context_before=before,
        )

    def on_postrun(
        self,
        sender: Any = None,
        task_id: str = "",
        kwargs: Any = None,
        retval: Any = None,
        state: str | None = None,
        **_: Any,
    ) -> None:
        if not self.ours(sender):
            return
        token = _TOKENS.pop(task_id, None)
        if token is not None and (kwargs or {}).get("reset_context"):
            RUN_CONTEXT.reset(token)
        self.record(
            "task_postrun",
            task_id=task_id,
            state=state,
            retries=sender.request.retries,
            retval_type=type(retval).__name__,
        )

    def on_success(self, sender: Any = None, **_: Any) -> None:
        if self.ours(sender):
            self.record("task_success", task_id=_request_id(sender))

    def on_failure(
        self, sender: Any = None, task_id: str = "", exception: Any = None, **_: Any
    ) -> None:
        if self.ours(sender):
            self.record(
                "task_failure",
                task_id=task_id,
                exception=type(exception).__name__,
                request_id=_request_id(sender),
            )

    def on_retry(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if self.ours(sender):
            self.record("task_retry", task_id=request.id, retries=request.retries)

    def on_published(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        headers = headers or {}
        self.record("after_task_publish", task_id=headers.get("id"), retries=headers.get("retries"))

    def on_process_init(self, sender: Any = None, **_: Any) -> None:
        self.record("worker_process_init", sender=str(sender))


class _SleepRecorder:
    """Stands in for the ``time`` module inside ``celery.beat``: records ``sleep``."""

    def __init__(self, record: _Recorder) -> None:
        self._record = record

    def sleep(self, seconds: float) -> None:
        self._record("loop_sleep", seconds=seconds)
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class ProbeScheduler(Scheduler):
    """A beat scheduler whose ``tick()`` follows ``PROBE_TICKS`` and records each call.

    ``PROBE_TICKS`` is a comma-separated list, one item per tick (the last one repeats):
    a number is returned as is; ``wait`` blocks inside ``tick()`` on an event (up to
    60 s) that a thread sets when the test pushes to ``<key_prefix>:wake``, then returns
    0. Every ``close()`` is recorded. Beat's own ``time.sleep`` calls (the ``time`` module
    of ``celery.beat``) are recorded as ``loop_sleep``.
    """

    def __init__(self, *args: Any, lazy: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, lazy=lazy, **kwargs)
        self._lazy = lazy
        if lazy:  # the banner's throwaway instance
            return
        env = os.environ
        self._probe_record = self.app.conf.probe_record
        self._ticks = [item.strip() for item in env.get("PROBE_TICKS", "1").split(",")]
        self._count = 0
        self._woken = threading.Event()
        self._wake_key = f"{env['DATAFORGE_KEY_PREFIX']}:wake"
        self._redis_url = env["DATAFORGE_REDIS_URL"]
        import celery.beat

        celery.beat.time = _SleepRecorder(self._probe_record)  # type: ignore[assignment]
        threading.Thread(
            target=contextvars.copy_context().run, args=(self._listen,), daemon=True
        ).start()

    def _listen(self) -> None:
        client = redis.Redis.from_url(self._redis_url)
        while True:
            if client.blpop([self._wake_key], timeout=1):
                self._probe_record("wake_received")
                self._woken.set()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        item = self._ticks[min(self._count, len(self._ticks) - 1)]
        self._count += 1
        self._probe_record("tick", number=self._count, item=item)
        if item != "wait":
            return float(item)
        woken = self._woken.wait(60)
        self._woken.clear()
        self._probe_record("tick_wait_ended", number=self._count, woken=woken)
        return 0

    def close(self) -> None:
        if not self._lazy:
            self._probe_record("close")
        super().close()


def __getattr__(name: str) -> Any:
    # `celery -A` reads `app`: build it from this process's environment, once. The test
    # process never touches it.
    if name == "app":
        built = build_app(os.environ)
        globals()["app"] = built
        return built
    raise AttributeError(name)
