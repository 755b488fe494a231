"""``GET /executions/{id}/logs``: a run's log as Server-Sent Events.

The stream subscribes to the run's live channel first, then replays the stored lines
from ``Last-Event-ID`` + 1 (header, or ``?last_event_id=``), then pushes live lines,
dropping any whose ``seq`` the replay already sent (the order ``LogBus`` prescribes, so
no line falls between replay and live). Each line is ``id: <seq>`` / ``event: log``; the
stream ends with ``event: end`` carrying the final status, at once if the run is already
over. A comment line every ``heartbeat_seconds`` keeps proxies from closing an idle
stream, and at each heartbeat the row is re-read, so a run the worker never finished
(a crash the reaper marked ``lost``) still ends the stream. When the client disconnects
the subscription is closed. Streams past ``sse_max_streams`` are refused with 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from dataforge_scheduler.api.context import Context
from dataforge_scheduler.api.errors import error_item, validation_failed
from dataforge_scheduler.api.http import Send
from dataforge_scheduler.api.schemas.runs import LogStreamQuery
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.core.ports import AsyncLogSubscription, LogEnd, LogLine
from dataforge_scheduler.errors import DataForgeError
from dataforge_scheduler.sql import store

__all__ = ["EventStream", "stream_logs"]

logger = logging.getLogger(__name__)

#: a ``Last-Event-ID``: ASCII digits, an optional minus, int64-sized (never fed to int()
#: otherwise: "²" is a digit to str.isdigit, and 5,000 digits exceed int()'s limit)
_LINE_ID = re.compile(r"-?[0-9]{1,19}\Z")

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _start_after(ctx: Context) -> int:
    """The first ``seq`` to send: ``Last-Event-ID`` (or ``?last_event_id=``) + 1."""
    header = ctx.request.headers.get("last-event-id")
    if header is not None and header.strip():
        text = header.strip()
        if not (_LINE_ID.match(text) and -1 <= int(text) < 2**62):
            raise validation_failed(
                [error_item(["header", "last-event-id"], f"not a line id: {text!r}")]
            )
        return int(text) + 1
    query = ctx.query(LogStreamQuery)
    return 0 if query.last_event_id is None else query.last_event_id + 1


def _row_status(ctx: Context, execution_id: int) -> tuple[ExecutionStatus, str | None, str]:
    """The row's status, stored log and Celery task id (which names its live log)."""
    with ctx.runtime.session() as session:
        row = store.get_execution(session, execution_id)
        return row.status, row.log_output, row.celery_task_id


async def stream_logs(ctx: Context) -> EventStream:
    execution_id: int = ctx.path["id"]
    start = _start_after(ctx)
    state = ctx.state
    principal = ctx.principal_name
    state.take_stream(principal)
    try:
        _, _, run_id = await ctx.offload(_row_status, ctx, execution_id)
        subscription = await state.log_feed.subscribe(run_id)
    except BaseException:
        state.give_stream(principal)
        raise
    return EventStream(
        ctx, execution_id, run_id, start=start, subscription=subscription, principal=principal
    )


class _ClientStalled(Exception):
    """The client took no data for ``sse_write_timeout_seconds``."""


async def _not_started(message: Any) -> None:
    raise RuntimeError("the event stream has not started")


def _event(data: str, *, event: str, event_id: int | None = None) -> bytes:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.append(f"event: {event}")
    lines += [f"data: {part}" for part in (data.splitlines() or [""])]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class EventStream:
    """The streaming response; owns the subscription and the stream slot until it ends."""

    status = 200

    def __init__(
        self,
        ctx: Context,
        execution_id: int,
        run_id: str,
        *,
        start: int,
        subscription: AsyncLogSubscription,
        principal: str,
    ) -> None:
        self._ctx = ctx
        self._principal = principal
        self._deadline = time.monotonic() + ctx.state.sse_max_stream_seconds
        self._id = execution_id
        self._run_id = run_id
        self._next = start
        self._subscription = subscription
        self._send: Send = _not_started
        self._from_bus = False  # whether any line came from the log bus

    async def __call__(self, send: Send) -> None:
        self._send = send
        watcher = asyncio.ensure_future(self._wait_for_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await self._write(b"retry: 3000\n\n")
            await self._run(watcher)
        except DataForgeError as exc:
            # headers are sent: end the stream; the client resumes with Last-Event-ID
            logger.warning("live log stream of execution %s stopped: %s", self._id, exc)
        except _ClientStalled:
            logger.info(
                "live log stream of execution %s closed: its client took nothing for %.0f s",
                self._id,
                self._ctx.state.sse_write_timeout_seconds,
            )
        finally:
            watcher.cancel()
            await self._subscription.close()
            self._ctx.state.give_stream(self._principal)
            await self._finish()

    async def _run(self, watcher: asyncio.Future[None]) -> None:
        await self._catch_up()
        status = await self._final_status()
        if status is not None:
            await self._end(status)
            return
        heartbeat = self._ctx.state.heartbeat_seconds
        last_beat = time.monotonic()
        while True:
            if time.monotonic() >= self._deadline:
                # the stream's lifetime is up: the client resumes with Last-Event-ID
                await self._write(b": the stream's lifetime is up; reconnect to go on\n\n")
                return
            wait = max(0.0, heartbeat - (time.monotonic() - last_beat))
            wait = min(wait, max(0.0, self._deadline - time.monotonic()))
            getter = asyncio.ensure_future(self._subscription.get(wait))
            pending: set[asyncio.Future[Any]] = {getter, watcher}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():  # the client left: stop reading at once
                getter.cancel()
                await asyncio.gather(getter, return_exceptions=True)
                return
            event = getter.result()
            if isinstance(event, LogLine):
                if event.seq > self._next:  # a gap: fill it from the stored list
                    await self._catch_up()
                if event.seq == self._next:
                    self._from_bus = True
                    await self._line(event)
            elif isinstance(event, LogEnd):
                await self._catch_up()
                await self._end(event.status)
                return
            elif time.monotonic() - last_beat >= heartbeat:
                last_beat = time.monotonic()
                await self._write(b": keep-alive\n\n")
                status = await self._final_status()
                if status is not None:
                    await self._catch_up()
                    await self._end(status)
                    return

    async def _catch_up(self) -> None:
        """Send the stored lines from the next expected ``seq`` on."""
        lines = await self._ctx.offload(self._ctx.runtime.logbus.read, self._run_id, self._next)
        for line in lines:
            self._from_bus = True
            await self._line(line)

    async def _final_status(self) -> str | None:
        """The run's final status if it is over (the bus's end marker, else the row)."""
        ended = await self._ctx.offload(self._ctx.runtime.logbus.ended, self._run_id)
        if ended is not None:
            return ended
        status, stored, _ = await self._ctx.offload(_row_status, self._ctx, self._id)
        if not status.finished:
            return None
        if stored is not None and not self._from_bus:
            # the live lines expired (or never reached Redis); the row kept the whole log
            for index, text in enumerate(stored.splitlines()):
                if index >= self._next:
                    await self._line(LogLine(seq=index, text=text))
        return status.value

    async def _line(self, line: LogLine) -> None:
        await self._write(_event(line.text, event="log", event_id=line.seq))
        self._next = line.seq + 1

    async def _end(self, status: str) -> None:
        payload: dict[str, Any] = {"execution_id": self._id, "status": status}
        await self._write(_event(json.dumps(payload), event="end"))

    async def _write(self, chunk: bytes) -> None:
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        try:
            # a client that stops reading fills the socket and the send waits: not forever
            await asyncio.wait_for(self._send(message), self._ctx.state.sse_write_timeout_seconds)
        except TimeoutError:
            raise _ClientStalled() from None

    async def _finish(self) -> None:
        message = {"type": "http.response.body", "body": b"", "more_body": False}
        try:
            await asyncio.wait_for(self._send(message), self._ctx.state.sse_write_timeout_seconds)
        except (OSError, RuntimeError, TimeoutError) as exc:  # the client is gone
            logger.debug("closing the log stream of execution %s: %r", self._id, exc)

    async def _wait_for_disconnect(self) -> None:
        while True:
            message = await self._ctx.request.receive()
            if message.get("type") == "http.disconnect":
                return
