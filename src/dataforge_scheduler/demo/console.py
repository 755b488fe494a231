"""What the demo shows on the console: dispatches, runs, their live logs and results.

``Console`` writes one timestamped line per event (``12:00:05  log      demo.heartbeat
#4  hello``) to a text stream, from any thread. ``NarratingDispatcher`` shows each
dispatch, from the scheduler or the API's "run now" alike. ``RunNarrator`` follows each
run's log live through the ``LogBus`` port, the same feed the API's SSE endpoint serves: a run is
followed from ``task_prerun`` (subscribed before the body writes its first line), its
lines are shown as they are flushed, and when the bus says the run ended the narrator
reads the run's row and shows its outcome, duration and result. One daemon thread polls
every followed run; ``stop()`` closes every subscription.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from dataforge_scheduler.core.messages import EXECUTION_ID, SLOT, TRIGGER, RunMessage
from dataforge_scheduler.core.ports import Dispatcher, LogEnd, LogSubscription
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.sql import store

__all__ = ["Console", "NarratingDispatcher", "RunNarrator"]

logger = logging.getLogger(__name__)

_TASK_WIDTH = 20
_RESULT_CHARS = 200
_OUTCOME_WAIT = 5.0


class Console:
    """Timestamped, aligned lines on ``stream``; safe to call from several threads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._mutex = threading.Lock()

    def line(self, kind: str, subject: str, text: str) -> None:
        """``HH:MM:SS  kind  subject  text`` in local time."""
        stamp = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
        self.write(f"{stamp}  {kind:<8} {subject:<{_TASK_WIDTH}} {text}".rstrip())

    def write(self, text: str = "") -> None:
        with self._mutex:
            self._stream.write(text + "\n")
            self._stream.flush()


class NarratingDispatcher:
    """A ``Dispatcher`` that shows each send on the console, then passes it on.

    The scheduler's slots and the API's "run now" both go through the runtime's
    dispatcher, so wrapping it shows every dispatch, whichever face made it.
    """

    def __init__(self, inner: Dispatcher, console: Console) -> None:
        self.inner = inner
        self._console = console

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        return self.inner.message_for(run)

    def dispatch(self, run: ClaimedSlot) -> RunMessage:
        message = self.inner.dispatch(run)
        given = message.headers
        label = (
            f"run #{given[EXECUTION_ID]}" if EXECUTION_ID in given else f"task id {message.task_id}"
        )
        why = str(given.get(TRIGGER) or "sent")
        slot = given.get(SLOT)
        if isinstance(slot, str):
            when = datetime.fromisoformat(slot).astimezone().strftime("%H:%M:%S")
            why = f"{why}, the {when} slot"
        self._console.line("dispatch", message.task_name, f"{label} ({why})")
        return message

    def cancel(self, celery_task_ids: Sequence[str], *, signal: str = "SIGTERM") -> None:
        self.inner.cancel(celery_task_ids, signal=signal)
        for celery_task_id in celery_task_ids:
            self._console.line("cancel", "revoke", f"task id {celery_task_id}")


@dataclass
class _Followed:
    run_id: str  # the Celery task id, which names the run's log
    label: str  # "#<execution id>" when the run's row was made before it was sent
    task_name: str
    subscription: LogSubscription
    since: float
    ended: str | None = None  # the final status, once the log said so


class RunNarrator:
    """Shows each followed run's log lines as they come, then its outcome."""

    def __init__(
        self,
        runtime: Runtime,
        console: Console,
        *,
        poll_seconds: float = 0.05,
        give_up_after: float = 3600.0,
    ) -> None:
        self._runtime = runtime
        self._console = console
        self._poll = poll_seconds
        self._give_up_after = give_up_after
        self._followed: dict[str, _Followed] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dataforge-demo-logs", daemon=True)
        #: Finished runs by final status, as the narrator saw them end.
        self.outcomes: Counter[str] = Counter()

    def start(self) -> RunNarrator:
        self._thread.start()
        return self

    def follow(self, run_id: str, task_name: str, *, execution_id: int | None = None) -> None:
        """Start following run ``run_id`` (its Celery task id); call it before the run
        writes its first line. A retry of a followed run keeps the subscription its first
        attempt made."""
        label = f"#{execution_id}" if execution_id is not None else run_id[:8]
        with self._mutex:
            if run_id not in self._followed:
                subscription = self._runtime.logbus.subscribe(run_id)
                self._followed[run_id] = _Followed(
                    run_id, label, task_name, subscription, time.monotonic()
                )
        self._console.line("start", task_name, f"run {label}")

    def stop(self, *, timeout: float = 2.0) -> None:
        """Show what already arrived, then close every subscription; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._mutex:
            followed, self._followed = list(self._followed.values()), {}
        for item in followed:
            item.subscription.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._poll)
        self.poll()  # what arrived before stop() is still shown

    def poll(self) -> None:
        """Show whatever arrived for every followed run (the thread calls it)."""
        with self._mutex:
            followed = list(self._followed.values())
        for item in followed:
            try:
                self._drain(item)
            except Exception:  # a broken feed must not end the narration of the others
                logger.exception("could not read the log of run %s", item.label)
                self._forget(item)

    def _drain(self, item: _Followed) -> None:
        if item.ended is not None:
            self._show_outcome(item)
            return
        while True:
            event = item.subscription.get(0)
            if event is None:
                if time.monotonic() - item.since > self._give_up_after:
                    self._forget(item)
                return
            if isinstance(event, LogEnd):
                item.ended = event.status
                item.since = time.monotonic()
                self._show_outcome(item)
                return
            self._console.line("log", f"{item.task_name} {item.label}", event.text)

    def _forget(self, item: _Followed) -> None:
        with self._mutex:
            self._followed.pop(item.run_id, None)
        item.subscription.close()

    def _show_outcome(self, item: _Followed) -> None:
        """The outcome from the run's row, once the history writer recorded it (a few ms
        after the log ended); after ``_OUTCOME_WAIT`` s, the status alone."""
        status = str(item.ended)
        with self._runtime.session() as session:
            row = store.get_execution_by_celery_id(session, item.run_id)
            if row is not None and row.status.finished:
                took = "" if row.duration_ms is None else f"after {row.duration_ms / 1000:.2f} s: "
                detail = f"result {_detail(row.result)}" if row.error is None else row.error
            elif time.monotonic() - item.since < _OUTCOME_WAIT:
                return  # not recorded yet: the next poll looks again
            else:
                detail = "(its row was not recorded in time to show the result)"
                took = ""
        self._forget(item)
        self.outcomes[status] += 1
        self._console.line(status, f"{item.task_name} {item.label}", took + detail)


def _detail(result: Any) -> str:
    text = json.dumps(result, ensure_ascii=False, default=str)
    return text if len(text) <= _RESULT_CHARS else text[: _RESULT_CHARS - 1] + "…"
