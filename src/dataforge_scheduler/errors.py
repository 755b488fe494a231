"""Every exception the library raises, under one root.

Third-party errors are wrapped where they leave their room
(``raise BackendUnavailable(...) from exc``), so a host needs to catch only
``DataForgeError``. Every exception here pickles with its details, because Celery
sends task exceptions through the result backend.

The tree::

    DataForgeError
    ├── ConfigurationError          settings or setup() used wrongly (also ValueError)
    ├── InvalidSchedule             a schedule that cannot fire as written (also ValueError)
    ├── InvalidParams               handler kwargs that do not fit a task's params (also ValueError)
    ├── RegistryError               duplicate task name, naming rule broken
    │   └── UnknownTask             a task name no registry or Celery app knows (also LookupError)
    ├── NotFound                    a row that does not exist (also LookupError)
    │   ├── ScheduleNotFound
    │   └── ExecutionNotFound
    ├── ConflictError               a change that clashes with the row's current state
    ├── LockError
    │   ├── LockNotAcquired         another run holds the lock
    │   └── LockLost                the lock expired or was force-released while held
    ├── BackendUnavailable          the database or Redis cannot be reached
    └── DatabaseError               the database refused a statement for another reason
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailable",
    "ConfigurationError",
    "ConflictError",
    "DataForgeError",
    "DatabaseError",
    "ExecutionNotFound",
    "InvalidParams",
    "InvalidSchedule",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "NotFound",
    "RegistryError",
    "ScheduleNotFound",
    "UnknownTask",
]


class DataForgeError(Exception):
    """Root of every exception dataforge-scheduler raises.

    ``message`` is the human sentence; keyword ``details`` (for example ``field=``)
    are kept as attributes and survive pickling.
    """

    #: the setting, column or parameter at fault, when there is one
    field: str | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        for key, value in details.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[DataForgeError], message: str, details: dict[str, Any]) -> DataForgeError:
    return cls(message, **details)


class ConfigurationError(DataForgeError, ValueError):
    """Settings or setup() used wrongly; ``field`` names the setting when there is one."""


class InvalidSchedule(DataForgeError, ValueError):
    """A schedule that cannot fire as written; ``field`` names the offending column."""


class InvalidParams(DataForgeError, ValueError):
    """Handler kwargs that do not match a task's registered params.

    ``errors`` is a list of ``{"loc": [...], "msg": ..., "type": ...}`` dicts.
    """

    errors: list[dict[str, Any]]
    task_name: str | None = None


class RegistryError(DataForgeError):
    """A task registration that breaks a rule (duplicate name, naming prefix)."""


class UnknownTask(RegistryError, LookupError):
    """A task name that is not registered; ``suggestions`` lists close matches."""

    suggestions: list[str]
    task_name: str | None = None


class NotFound(DataForgeError, LookupError):
    """A row that does not exist."""


class ScheduleNotFound(NotFound):
    """No scheduled task with that id or name."""


class ExecutionNotFound(NotFound):
    """No execution with that id or Celery task id."""


class ConflictError(DataForgeError):
    """A change that clashes with the row's current state (stale version, system task)."""


class LockError(DataForgeError):
    """Base of the lock errors."""


class LockNotAcquired(LockError):
    """Another run holds the lock; ``holder`` describes it when known."""

    holder: Any = None


class LockLost(LockError):
    """The lock expired or was force-released while this run believed it held it."""


class BackendUnavailable(DataForgeError):
    """The database or Redis cannot be reached; the original error is the ``__cause__``."""


class DatabaseError(DataForgeError):
    """The database refused a statement for a reason that is neither an outage nor a
    conflict (a schema the library does not expect, a value a raw-SQL row broke); the
    original error is the ``__cause__``."""
