"""Reading dataforge's message headers from a Celery request.

The names live in ``core.messages``. In a worker a custom header is visible both as
``request.<name>`` and in ``request.headers``; in eager mode only in ``request.headers``
(docs/internals.md §9, §14), so read them with ``header()``.
"""

from __future__ import annotations

from typing import Any

from dataforge_scheduler.core.messages import EXECUTION_ID, OVERLAP, SLOT, TRIGGER

__all__ = ["EXECUTION_ID", "OVERLAP", "SLOT", "TRIGGER", "header"]


def header(request: Any, name: str) -> Any:
    """Read a custom header from a Celery request, worker or eager mode alike."""
    headers = getattr(request, "headers", None) or {}
    if name in headers:
        return headers[name]
    return getattr(request, name, None)
