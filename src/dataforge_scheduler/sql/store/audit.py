"""Audit statements: the append-only trail of changes made through the API.

``audit_log`` (``models.AuditEntry``) holds one row per state-changing call (create,
update, delete, run, pause, resume, release-lock): who (``principal``), what
(``action``), on what (``target_type`` + ``target_id``), the row before and after, when,
and the request id. The API writes it in the same transaction as the change it records.
The functions here only insert and read: there is deliberately no update or delete.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataforge_scheduler.core.enums import AuditAction
from dataforge_scheduler.sql.models import AuditEntry, ScheduledTask
from dataforge_scheduler.sql.store.common import aware_now, json_safe
from dataforge_scheduler.sql.store.fields import SCHEDULE_FIELDS
from dataforge_scheduler.sql.store.paging import Order, Page, fetch_page

__all__ = ["list_audit", "record_audit", "schedule_snapshot"]

_SNAPSHOT_EXTRA = ("id", "next_run_at", "version", "pause_note")


_NEWEST_FIRST = Order("-at", AuditEntry.id, AuditEntry.at, descending=True)


def schedule_snapshot(schedule: ScheduledTask) -> dict[str, Any]:
    """The configuration of ``schedule`` as JSON-safe values (what an audit row keeps)."""
    names = sorted(SCHEDULE_FIELDS) + list(_SNAPSHOT_EXTRA)
    values = {name: getattr(schedule, name) for name in names}
    snapshot: dict[str, Any] = json_safe(values)
    return snapshot


def record_audit(
    session: Session,
    *,
    principal: str,
    action: AuditAction | str,
    target_type: str,
    target_id: int | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    request_id: str | None,
    now: datetime,
) -> AuditEntry:
    """Append one audit row in the caller's transaction (flushed, not committed)."""
    entry = AuditEntry(
        at=aware_now(now),
        principal=principal[:200],
        action=AuditAction(action).value,
        target_type=target_type,
        target_id=target_id,
        before=None if before is None else json_safe(dict(before)),
        after=None if after is None else json_safe(dict(after)),
        request_id=None if request_id is None else request_id[:64],
    )
    session.add(entry)
    session.flush()
    return entry


def list_audit(
    session: Session,
    *,
    action: str | None = None,
    target_type: str | None = None,
    target_id: int | None = None,
    page: int | None = None,
    page_size: int = 50,
    cursor: str | None = None,
    count: bool = False,
) -> Page[AuditEntry]:
    """A page of audit rows, newest first, matching every filter given (paging as
    ``store.paging.fetch_page``)."""
    query = select(AuditEntry)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    return fetch_page(
        session,
        query,
        order=_NEWEST_FIRST,
        page=page,
        page_size=page_size,
        cursor=cursor,
        count=count,
    )
