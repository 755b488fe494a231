"""Schedule statements: create, read, list, update, pause, resume and delete.

Configuration changes take the row's lock (``SELECT ... FOR UPDATE``; SQLite has no
row locks and serialises writers itself) and recompute ``next_run_at`` from ``now``
inside the same transaction, so ``next_run_at`` has one writer at a time (DESIGN.md).
Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from dataforge_scheduler.core.enums import TaskStatus, TaskType
from dataforge_scheduler.core.timing import next_run_after_change, refuse_past_run_at
from dataforge_scheduler.core.triggers import trigger_for
from dataforge_scheduler.errors import ConflictError, InvalidSchedule, ScheduleNotFound
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.sql.store.common import aware_now, invalid_param, is_unique_violation
from dataforge_scheduler.sql.store.fields import (
    REQUIRED_FIELDS,
    TRIGGER_FIELDS,
    clean_fields,
    clean_pause_note,
)
from dataforge_scheduler.sql.store.paging import Order, Page, fetch_page

__all__ = [
    "compute_next_run",
    "create_schedule",
    "delete_schedule",
    "get_schedule",
    "get_schedule_by_name",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "update_schedule",
]

logger = logging.getLogger(__name__)

_SORT_COLUMNS = {
    "id": ScheduledTask.id,
    "name": ScheduledTask.name,
    "next_run_at": ScheduledTask.next_run_at,
    "last_run_at": ScheduledTask.last_run_at,
    "created_at": ScheduledTask.created_at,
}
# what the trigger reads, copied onto a preview row to validate a change before applying it
_PREVIEW_FIELDS = (*sorted(TRIGGER_FIELDS), "status", "created_at")


def compute_next_run(
    schedule: ScheduledTask, *, now: datetime, default_timezone: str
) -> datetime | None:
    """The schedule's ``next_run_at`` after a configuration change (``core.timing``); the
    trigger is built (and so validated) whatever the status. ``InvalidSchedule`` naming
    ``exclusions`` when they alone leave an active schedule no slot."""
    trigger = trigger_for(schedule, default_timezone)
    upcoming = next_run_after_change(trigger, status=schedule.status, now=now)
    if upcoming is None and schedule.exclusions and schedule.status is TaskStatus.ACTIVE:
        bare = trigger_for(_without_exclusions(schedule), default_timezone)
        if next_run_after_change(bare, status=schedule.status, now=now) is not None:
            raise InvalidSchedule(
                "exclusions leave the schedule no slot to fire at",
                field="exclusions",
                value=schedule.exclusions,
            )
    return upcoming


def _without_exclusions(schedule: ScheduledTask) -> ScheduledTask:
    copy = ScheduledTask(**{key: getattr(schedule, key) for key in _PREVIEW_FIELDS})
    copy.exclusions = None
    return copy


def _refuse_past_run_at(schedule: ScheduledTask, *, now: datetime) -> None:
    refuse_past_run_at(schedule.task_type, schedule.run_at, now=now)


def create_schedule(
    session: Session, fields: Mapping[str, Any], *, now: datetime, default_timezone: str
) -> ScheduledTask:
    """Insert a schedule with its first ``next_run_at``; ``ConflictError`` if the name is
    taken, ``InvalidSchedule`` naming the field for bad input."""
    now = aware_now(now)
    values = clean_fields(fields)
    for required in REQUIRED_FIELDS:
        if values.get(required) is None:
            raise InvalidSchedule(f"{required} is required", field=required, value=None)
    values.setdefault("status", TaskStatus.ACTIVE)
    # created_at anchors an interval grid, so it must be known before the row exists
    schedule = ScheduledTask(**values, created_at=now, updated_at=now)
    _refuse_past_run_at(schedule, now=now)
    schedule.next_run_at = compute_next_run(schedule, now=now, default_timezone=default_timezone)
    try:
        with session.begin_nested():
            session.add(schedule)
    except IntegrityError as exc:
        raise _write_refused(exc, schedule.name) from exc
    return schedule


def _write_refused(exc: IntegrityError, name: str) -> Exception:
    if is_unique_violation(exc):
        return ConflictError(f"a schedule named {name!r} already exists", field="name", value=name)
    # the database's own words (constraint and column names, values) go to the log
    logger.warning("the database refused schedule %r: %s", name, exc.orig)
    return InvalidSchedule(
        "the database refused the schedule: a value is outside what its columns allow",
        field=None,
    )


def get_schedule(session: Session, schedule_id: int, *, for_update: bool = False) -> ScheduledTask:
    """The schedule with ``schedule_id`` (locked and re-read with ``for_update``)."""
    if for_update:
        query = select(ScheduledTask).where(ScheduledTask.id == schedule_id).with_for_update()
        found = session.scalars(query, execution_options={"populate_existing": True}).first()
    else:
        found = session.get(ScheduledTask, schedule_id)
    if found is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}", schedule_id=schedule_id)
    return found


def get_schedule_by_name(session: Session, name: str) -> ScheduledTask:
    """The schedule called ``name``; ``ScheduleNotFound`` if there is none."""
    found = session.scalars(select(ScheduledTask).where(ScheduledTask.name == name)).first()
    if found is None:
        raise ScheduleNotFound(f"no schedule named {name!r}", name=name)
    return found


def _enum_param(field: str, value: Any, *, enum: type[TaskStatus] | type[TaskType]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise invalid_param(
            field, value, message=f"{field} must be one of {allowed}, got {value!r}"
        ) from None


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _sort_order(sort: str) -> Order:
    descending = sort.startswith("-")
    column = _SORT_COLUMNS.get(sort.removeprefix("-"))
    if column is None:
        allowed = ", ".join(_SORT_COLUMNS)
        raise invalid_param(
            "sort", sort, message=f"sort must be one of {allowed}, optionally prefixed with '-'"
        )
    primary = None if column is ScheduledTask.id else column
    return Order(sort, ScheduledTask.id, primary, descending=descending)


def list_schedules(
    session: Session,
    *,
    status: str | None = None,
    task_type: str | None = None,
    task_names: Collection[str] | None = None,
    search: str | None = None,
    page: int | None = None,
    page_size: int = 50,
    sort: str = "id",
    cursor: str | None = None,
    count: bool = False,
) -> Page[ScheduledTask]:
    """A page of schedules matching every filter given; ``search`` looks for a substring
    of the name or task name, ignoring case. Descriptions (up to 10,000 characters) are
    not searched: a ``%…%`` match over them reads every row's text, ~80x the cost.
    Paging as ``store.paging.fetch_page`` (a cursor belongs to its ``sort``)."""
    order = _sort_order(sort)
    query = select(ScheduledTask)
    if status is not None:
        query = query.where(ScheduledTask.status == _enum_param("status", status, enum=TaskStatus))
    if task_type is not None:
        kind = _enum_param("task_type", task_type, enum=TaskType)
        query = query.where(ScheduledTask.task_type == kind)
    if task_names is not None:
        query = query.where(ScheduledTask.task_name.in_(list(task_names)))
    if search:
        pattern = _like_pattern(search)
        columns = (ScheduledTask.name, ScheduledTask.task_name)
        query = query.where(or_(*(c.ilike(pattern, escape="\\") for c in columns)))
    return fetch_page(
        session,
        query,
        order=order,
        page=page,
        page_size=page_size,
        cursor=cursor,
        count=count,
    )


def update_schedule(
    session: Session,
    schedule_id: int,
    changes: Mapping[str, Any],
    *,
    now: datetime,
    default_timezone: str,
    expected_version: int | None = None,
) -> ScheduledTask:
    """Apply ``changes`` under the row's lock and bump ``version`` if anything changed.

    A change to when the schedule fires, or to its status, recomputes ``next_run_at`` from
    ``now``. ``ConflictError`` when ``expected_version`` is stale or the new name is taken.
    """
    now = aware_now(now)
    values = clean_fields(changes)
    schedule = get_schedule(session, schedule_id, for_update=True)
    if expected_version is not None and schedule.version != expected_version:
        raise ConflictError(
            f"schedule {schedule_id} is at version {schedule.version}, not {expected_version}: "
            "it changed since it was read",
            field="version",
            expected_version=expected_version,
            current_version=schedule.version,
        )
    changed = {key: value for key, value in values.items() if getattr(schedule, key) != value}
    if not changed:
        return schedule
    if changed.keys() & (TRIGGER_FIELDS | {"status"}):
        preview = ScheduledTask(**{key: getattr(schedule, key) for key in _PREVIEW_FIELDS})
        for key, value in changed.items():
            setattr(preview, key, value)
        if changed.keys() & {"task_type", "run_at"} or preview.status is TaskStatus.ACTIVE:
            _refuse_past_run_at(preview, now=now)
        if preview.status is TaskStatus.ACTIVE and "status" in changed:
            _refuse_no_runs_left(schedule, changed.get("max_runs", schedule.max_runs))
        changed["next_run_at"] = compute_next_run(
            preview, now=now, default_timezone=default_timezone
        )
    _apply(session, schedule, changed=changed, now=now)
    return schedule


def _apply(
    session: Session, schedule: ScheduledTask, *, changed: Mapping[str, Any], now: datetime
) -> None:
    name = changed.get("name", schedule.name)
    status = changed.get("status")
    if status is not None and status is not TaskStatus.PAUSED:
        # a note says why it is paused; the streak starts again with the schedule
        changed = {"pause_note": None, **changed}
        if status is TaskStatus.ACTIVE:
            changed["failure_streak"] = 0
    try:
        # inside the savepoint: a refused flush rolls these attribute changes back too
        with session.begin_nested():
            for key, value in changed.items():
                setattr(schedule, key, value)
            schedule.version += 1
            schedule.updated_at = now
            # an equal value would be left out of the UPDATE and the column's onupdate
            # (the database clock) would win over the caller's clock
            flag_modified(schedule, "updated_at")
    except IntegrityError as exc:
        raise _write_refused(exc, name) from exc


def _refuse_no_runs_left(schedule: ScheduledTask, max_runs: int | None) -> None:
    if max_runs == 0:
        raise ConflictError(
            f"schedule {schedule.id} has used all its max_runs; set max_runs to run it again",
            field="max_runs",
            schedule_id=schedule.id,
        )


def pause_schedule(
    session: Session, schedule_id: int, *, now: datetime, note: str | None = None
) -> ScheduledTask:
    """Stop the schedule firing (``next_run_at`` cleared), with ``note`` saying why (shown
    as ``pause_note`` until it is resumed). Pausing twice changes nothing, except that a
    new note replaces the old one."""
    now = aware_now(now)
    if note is not None:
        note = clean_pause_note(note)
    schedule = get_schedule(session, schedule_id, for_update=True)
    if schedule.status is not TaskStatus.PAUSED:
        changed = {"status": TaskStatus.PAUSED, "next_run_at": None, "pause_note": note}
        _apply(session, schedule, changed=changed, now=now)
    elif note is not None and note != schedule.pause_note:
        _apply(session, schedule, changed={"pause_note": note}, now=now)
    return schedule


def resume_schedule(
    session: Session, schedule_id: int, *, now: datetime, default_timezone: str
) -> ScheduledTask:
    """Make the schedule active again, next firing at its first slot after ``now`` (slots
    missed while it was paused are not run), its ``pause_note`` cleared and its
    ``failure_streak`` back at 0; resuming an active schedule changes nothing.

    ``ConflictError`` for a one-shot ``date`` schedule whose ``run_at`` has passed.
    """
    now = aware_now(now)
    schedule = get_schedule(session, schedule_id, for_update=True)
    if schedule.status is TaskStatus.ACTIVE:
        return schedule
    _refuse_no_runs_left(schedule, schedule.max_runs)
    preview = ScheduledTask(**{key: getattr(schedule, key) for key in _PREVIEW_FIELDS})
    preview.status = TaskStatus.ACTIVE
    try:
        _refuse_past_run_at(preview, now=now)
    except InvalidSchedule as exc:
        raise ConflictError(
            f"schedule {schedule_id} is a one-shot whose {exc.message}; update run_at to resume it",
            field="run_at",
            schedule_id=schedule_id,
        ) from exc
    next_run_at = compute_next_run(preview, now=now, default_timezone=default_timezone)
    _apply(
        session,
        schedule,
        changed={"status": TaskStatus.ACTIVE, "next_run_at": next_run_at},
        now=now,
    )
    return schedule


def delete_schedule(
    session: Session, schedule_id: int, *, allow_system: bool = False
) -> ScheduledTask:
    """Delete the schedule (its run history stays, detached); ``ConflictError`` for a
    system schedule unless ``allow_system``."""
    schedule = get_schedule(session, schedule_id, for_update=True)
    if schedule.is_system and not allow_system:
        raise ConflictError(
            f"schedule {schedule_id} ({schedule.name!r}) is a system schedule and cannot "
            "be deleted",
            field="is_system",
            schedule_id=schedule_id,
        )
    session.delete(schedule)
    session.flush()
    return schedule
