"""The append-only audit trail of configuration changes made through the API.

``audit_log`` holds one row per state-changing call (create, update, delete, run, pause,
resume, release-lock): who (``principal``), what (``action``), on what (``target_type`` +
``target_id``), the row before and after, when, and the request id. The table lives on
the library's one ``metadata`` (it is created by ``create_all`` once this module is
imported), and the API writes it in the same transaction as the change it records. The
functions here only insert and read: there is deliberately no update or delete.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Identity,
    Index,
    Integer,
    String,
    column,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from dataforge_scheduler.sql.models import Base, ScheduledTask
from dataforge_scheduler.sql.store.common import Page, aware_now, fetch_page, json_safe
from dataforge_scheduler.sql.store.fields import SCHEDULE_FIELDS
from dataforge_scheduler.sql.types import JSONType, UTCDateTime

__all__ = [
    "AuditAction",
    "AuditEntry",
    "list_audit",
    "record_audit",
    "schedule_snapshot",
]

# as in models: SQLite autoincrements an INTEGER PRIMARY KEY only
_ID = BigInteger().with_variant(Integer(), "sqlite")
_SNAPSHOT_EXTRA = ("id", "next_run_at", "version")


class AuditAction(StrEnum):
    """The state-changing calls the audit trail records."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RUN = "run"
    PAUSE = "pause"
    RESUME = "resume"
    RELEASE_LOCK = "release_lock"


class AuditEntry(Base):
    """One recorded change; ``before``/``after`` are JSON snapshots (None where absent)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint(
            column("action", String).in_([a.value for a in AuditAction]), name="action"
        ),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_target", "target_type", "target_id"),
    )
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy reads a plain dict

    id: Mapped[int] = mapped_column(_ID, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, server_default=func.now())
    principal: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    before: Mapped[Any] = mapped_column(JSONType, nullable=True)
    after: Mapped[Any] = mapped_column(JSONType, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return (
            f"<AuditEntry id={self.id} {self.action} {self.target_type}:{self.target_id} "
            f"by {self.principal!r} at {self.at}>"
        )


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
    page: int = 1,
    page_size: int = 50,
) -> Page[AuditEntry]:
    """A page of audit rows, newest first, matching every filter given."""
    query = select(AuditEntry)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    order_by: list[ColumnElement[Any]] = [AuditEntry.at.desc(), AuditEntry.id.desc()]
    return fetch_page(session, query, order_by=order_by, page=page, page_size=page_size)
