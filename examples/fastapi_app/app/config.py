"""The service's settings: every dataforge-scheduler setting plus the service's own.

``AppSettings`` subclasses the library's ``Settings``, so one object (and one set of
``DATAFORGE_*`` environment variables) configures the library and the service alike.
``settings_for(app)`` gives task code the settings of the app's current runtime: the
ones ``setup()`` was last called with, which in tests are the test's.
"""

from __future__ import annotations

from typing import Any

from dataforge_scheduler import ConfigurationError, Settings, runtime_for
from pydantic import Field

__all__ = ["AppSettings", "settings_for"]


class AppSettings(Settings):
    """``Settings`` plus the service's own fields (``DATAFORGE_SYNC_BATCH_SIZE``...)."""

    sync_batch_size: int = Field(100, gt=0)
    """Accounts refreshed per batch by `dataforge.sync_accounts`; the run's lock is
    extended after each batch."""


def settings_for(celery_app: Any) -> AppSettings:
    """The ``AppSettings`` of the runtime bound to ``celery_app``.

    Raises ``ConfigurationError`` when ``setup()`` was given plain ``Settings`` (in a
    test, override ``dataforge_settings`` to build ``AppSettings``).
    """
    settings = runtime_for(celery_app).settings
    if not isinstance(settings, AppSettings):
        raise ConfigurationError(
            f"setup() was given {type(settings).__name__}, not AppSettings: "
            "build the settings with AppSettings",
            field="settings",
        )
    return settings
