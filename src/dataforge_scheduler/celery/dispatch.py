"""``CeleryDispatcher``: send a run to the workers by registered task name.

The ``Dispatcher`` port (``runtime.py``) on a Celery app. The beat scheduler sends every
claimed slot through it and the API's "run now" does too, so both publish the same way:
``app.send_task`` by name (never ``apply_async`` on a local task object, which eager mode
would run inline in the caller), with the Celery task id the caller already stored on
the ``pending`` execution row, the caller's options and dataforge's headers.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.exceptions import KombuError

from dataforge_scheduler.errors import BackendUnavailable

__all__ = ["CeleryDispatcher"]

logger = logging.getLogger(__name__)

# what kombu and redis-py raise when the broker cannot take a message
_BROKER_ERRORS = (KombuError, ConnectionError, OSError, TimeoutError)


class CeleryDispatcher:
    """Publishes runs through ``app.send_task`` (implements ``runtime.Dispatcher``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __repr__(self) -> str:
        return f"<CeleryDispatcher app={getattr(self.app, 'main', None)!r}>"

    def send(
        self,
        task_name: str,
        *,
        kwargs: dict[str, Any],
        task_id: str,
        options: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish one run of ``task_name`` as Celery task ``task_id``.

        ``options`` are ``send_task`` options (``queue``, ``priority``, ``expires``,
        ``countdown``...); ``headers`` become message headers. Raises
        ``BackendUnavailable`` when the broker refuses or cannot be reached (after
        Celery's own publish retries).
        """
        send_options = dict(options or {})
        try:
            self.app.send_task(
                task_name,
                kwargs=kwargs,
                task_id=task_id,
                headers=dict(headers or {}),
                **send_options,
            )
        except _BROKER_ERRORS as exc:
            raise BackendUnavailable(
                f"could not send task {task_name!r} (id {task_id}) to the broker: {exc}",
                task_name=task_name,
                task_id=task_id,
            ) from exc
        logger.debug("sent %s as %s with options %s", task_name, task_id, send_options)
