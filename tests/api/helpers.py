"""Helpers shared by the API tests: keys, the test registry, settings, and schedules
written straight through the store (not through the API). The recording dispatcher is
the one the pytest plugin ships (``dataforge_scheduler.testing.RecordingDispatcher``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.sql import store
from dataforge_scheduler.sql.models import ScheduledTask
from dataforge_scheduler.testing import RecordingDispatcher

__all__ = ["HEADERS", "KEY", "PREFIX", "READ_KEY", "RecordingDispatcher", "add_schedule"]

KEY = "test-full-key-0123456789"
READ_KEY = "test-read-key-0123456789"
PREFIX = "/api/v1"
HEADERS = {"X-API-Key": KEY}


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()
    registry.register("dftest.sync_accounts", name="账号同步", category="sync")
    registry.register(
        "dftest.report",
        name="Report",
        description="builds a report",
        category="reports",
        params=[
            {"name": "days", "type": "int", "required": True, "label": "Days"},
            {"name": "fmt", "type": "str", "label": "Format", "choices": ["csv", "pdf"]},
        ],
    )
    registry.register("dftest.cleanup", name="Cleanup", category="system", is_system=True)
    return registry


def make_settings(database_url: str, redis_url: str, key_prefix: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "celery_broker_url": "redis://127.0.0.1:6379/0",
        "key_prefix": key_prefix,
        "api_keys": [KEY],
        "api_read_only_keys": [READ_KEY],
        "celery_timezone": "UTC",
    }
    values.update(extra)
    return Settings(**values)


def future(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


def add_schedule(runtime: Runtime, name: str = "hourly", **fields: Any) -> ScheduledTask:
    """A schedule written straight through the store."""
    values: dict[str, Any] = {
        "name": name,
        "task_type": "interval",
        "task_name": "dftest.sync_accounts",
        "interval_seconds": 3600,
    }
    values.update(fields)
    with runtime.session() as session:
        return store.create_schedule(session, values, now=datetime.now(UTC), default_timezone="UTC")
