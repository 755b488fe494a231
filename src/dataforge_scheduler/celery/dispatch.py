"""``CeleryDispatcher``: the ``Dispatcher`` port on a Celery app, and the place to change
how every run is published.

The beat scheduler sends every claimed slot through it and "run now" (the API, the CLI,
the pytest plugin) does too, so both publish the same message (``core.messages``):
``app.send_task`` by name (never ``apply_async`` on a local task object, which eager mode
would run inline in the caller), with the Celery task id already stored on the run's
``pending`` row. Override ``message_for`` in a subclass (and pass an instance to
``setup(..., dispatcher=...)``) to add routing or headers for scheduled and manual runs
alike.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from kombu.exceptions import KombuError

from dataforge_scheduler.core.messages import RunMessage
from dataforge_scheduler.core.messages import message_for as default_message
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.errors import BackendUnavailable

__all__ = ["CeleryDispatcher"]

logger = logging.getLogger(__name__)

# what kombu and redis-py raise when the broker cannot take a message
_BROKER_ERRORS = (KombuError, ConnectionError, OSError, TimeoutError)

# Broker commands (one LPUSH per message, more for queues with an expiry) a batch
# buffers before kombu writes them: memory stays bounded in a large catch-up pass. A
# write that fails is remembered by kombu and raised again when the batch ends, so a
# batch whose writes did not all succeed is reported as a whole.
_BATCH_OPERATIONS = 2000


class CeleryDispatcher:
    """Publishes runs through ``app.send_task`` (implements ``core.ports.Dispatcher``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._local = threading.local()  # the producer of a batch, per thread

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publish every run sent inside the block (on this thread) through one producer
        and broker connection, acquired once from the app's pool: a beat pass sends its
        slots this way. Outside a block each send acquires its own.

        Where the transport can batch (kombu's ``Producer.batch``, on the Redis transport
        since kombu 5.7), the block's messages are buffered and written in one pipeline
        when it ends: ``dispatch`` inside the block then only buffers, and the end of the
        block raises ``BackendUnavailable`` if the write failed. None of the block's runs
        may then be counted as sent, though some may have reached the broker (a run's
        row lets it run once, so sending it again is safe). A block that raises discards
        what it buffered. Inside a batch a send is not retried (kombu cannot move a batch
        to a new channel): a broker error fails it at once.
        """
        if getattr(self._local, "producer", None) is not None:  # already in one
            yield
            return
        with contextlib.ExitStack() as stack:
            try:
                producer = stack.enter_context(self.app.producer_or_acquire())
            except _BROKER_ERRORS as exc:  # each send then fails on its own, as it should
                logger.debug("no producer for a batch: %s", exc)
                yield
                return
            self._local.producer = producer
            try:
                buffered = getattr(producer, "batch", None)
                if buffered is None:  # kombu before 5.7: each send writes at once
                    yield
                    return
                body_done = False
                self._local.batching = True
                try:
                    with buffered(max_size=_BATCH_OPERATIONS):
                        yield
                        body_done = True
                except _BROKER_ERRORS as exc:
                    if not body_done:
                        raise
                    raise BackendUnavailable(
                        f"could not write a batch of runs to the broker: {exc}; their "
                        "delivery is uncertain",
                        backend="broker",
                    ) from exc
            finally:
                self._local.producer = None
                self._local.batching = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} app={getattr(self.app, 'main', None)!r}>"

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        """The message that publishes ``run``; override to route or add headers (keep
        ``task_id``: the worker finds the run's row by it)."""
        return default_message(run)

    def dispatch(self, run: ClaimedSlot) -> RunMessage:
        """Publish ``run`` as Celery task ``run.celery_task_id``; the message sent.

        Raises ``BackendUnavailable`` when the broker refuses or cannot be reached (after
        Celery's own publish retries).
        """
        message = self.message_for(run)
        if message.task_id != run.celery_task_id:
            raise ValueError(
                f"message_for changed the task id of run {run.execution_id} "
                f"({run.celery_task_id} -> {message.task_id}): the worker could not find "
                "its row"
            )
        self.send(message)
        return message

    def send(self, message: RunMessage) -> None:
        """Publish ``message`` as it is (``dispatch`` builds it first)."""
        options = dict(message.options)
        # ignore_result=True only keeps this process from subscribing to the run's result:
        # with a Redis result backend, send_task subscribes the sender to every task it
        # sends, a round trip per run that the scheduler never reads. The header, which
        # is what the worker reads, keeps what the run asked for (None: the task's own
        # setting), so results are stored as with a plain send_task.
        headers = {"ignore_result": options.pop("ignore_result", None), **message.headers}
        if getattr(self._local, "batching", False):
            # kombu's publish retry would revive the producer on a new channel, which a
            # batch refuses; a failed send inside a batch fails at once instead
            options.setdefault("retry", False)
        try:
            self.app.send_task(
                message.task_name,
                kwargs=message.kwargs,
                task_id=message.task_id,
                headers=headers,
                producer=getattr(self._local, "producer", None),
                ignore_result=True,
                **options,
            )
        except _BROKER_ERRORS as exc:
            raise BackendUnavailable(
                f"could not send task {message.task_name!r} (id {message.task_id}) to the "
                f"broker: {exc}",
                task_name=message.task_name,
                task_id=message.task_id,
                backend="broker",
            ) from exc
        logger.debug(
            "sent %s as %s with options %s", message.task_name, message.task_id, message.options
        )

    def cancel(self, celery_task_ids: Sequence[str], *, signal: str = "SIGTERM") -> None:
        """``app.control.revoke(ids, terminate=True, signal=signal)``: a broadcast every
        worker keeps in its revoked set (a run not started is dropped on receipt; one
        going is terminated). A worker started after the broadcast does not know it."""
        if not celery_task_ids:
            return
        try:
            self.app.control.revoke(list(celery_task_ids), terminate=True, signal=signal)
        except _BROKER_ERRORS as exc:
            raise BackendUnavailable(
                f"could not revoke run(s) {', '.join(celery_task_ids)}: the broker is "
                f"unreachable ({exc})",
                backend="broker",
            ) from exc
