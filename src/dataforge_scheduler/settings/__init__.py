"""Every setting of dataforge-scheduler, in one pydantic-settings model.

``Settings`` keeps the seed's key names (``celery_*``) and adds the library's own
(database, Redis, API keys, locks, logs, retention). Each field reads the environment
variable ``DATAFORGE_<FIELD>``; values are validated once, here, with messages that
name the field and the value (secrets masked). This module also renders the Celery
configuration that ``setup()`` applies and the configuration table the docs embed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.settings.checks import (
    CHECKS,
    ERROR,
    MASK,
    REDIS_BACKEND_SCHEMES,
    REDIS_URL_SCHEMES,
    KeyList,
    cross_check,
    key_values,
    mask_url,
    split_keys,
)

__all__ = [
    "REDIS_URL_SCHEMES",
    "Settings",
    "key_values",
    "mask_url",
    "settings_table_markdown",
]


class Settings(BaseSettings):
    """All configuration of dataforge-scheduler; field ``x`` reads ``DATAFORGE_X``.

    Construct it directly (``Settings(database_url=...)``) or with ``from_env()``. As with
    any pydantic-settings model, both read ``DATAFORGE_*`` variables for fields not passed
    as keywords (keywords win), and unknown keywords are rejected (``extra="forbid"``;
    ``DATAFORGE_*`` variables that match no field are ignored, only keywords are checked).
    Errors differ by door: the constructor raises pydantic's ``ValidationError`` (which
    pydantic users expect), ``from_env()`` raises ``ConfigurationError`` naming each
    environment variable. The instance is frozen; use ``model_copy(update=...)`` only
    for tests, since it skips validation.

    A host subclasses it to add its own fields; ``from_env()``, ``redacted()`` and
    ``settings_table_markdown()`` follow the subclass. ``api_keys`` and
    ``api_read_only_keys`` take a JSON object of names to keys, a JSON list or a
    comma-separated string from the environment. ``repr()`` and ``redacted()`` mask URL
    passwords and API keys.
    """

    model_config = SettingsConfigDict(
        env_prefix="DATAFORGE_",
        extra="forbid",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # inputs may hold passwords; our messages quote them masked
        use_attribute_docstrings=True,  # each field's docstring is its description
    )

    #: Fields whose values are URLs (their passwords are masked) and secret fields (masked whole).
    url_fields: ClassVar[frozenset[str]] = frozenset(
        {"celery_broker_url", "celery_result_backend", "database_url", "redis_url"}
    )
    secret_fields: ClassVar[frozenset[str]] = frozenset({"api_keys", "api_read_only_keys"})

    celery_broker_url: str = "redis://localhost:6379/0"
    """Celery broker URL; `;` separates failover URLs."""
    celery_result_backend: str = "redis://localhost:6379/1"
    """Celery result backend URL."""
    celery_timezone: str = "UTC"
    """IANA time zone of the Celery app and the default for cron schedules."""
    celery_broker_visibility_timeout: int = 36000
    """Seconds before Redis redelivers an unacknowledged task; must exceed twice
    `celery_task_default_timeout`."""
    celery_task_default_timeout: int = 14400
    """Hard time limit of a task run, in seconds (the soft limit is a little less)."""
    celery_task_default_max_retries: int = 3
    """Default retries of a DataForgeTask task (0 disables retries)."""
    celery_task_retry_delay: int = 60
    """Seconds before the first retry of a DataForgeTask task."""
    celery_task_retry_backoff: bool = True
    """Double the retry delay after each retry."""
    celery_worker_concurrency: int = 4
    """Worker processes per Celery worker."""
    celery_worker_prefetch_multiplier: int = 1
    """Messages a worker process reserves ahead (0 means no limit)."""
    celery_beat_sync_every: int = 60
    """Longest the beat scheduler sleeps between looks at the database, in seconds."""
    database_url: str = "postgresql+psycopg://localhost:5432/dataforge"
    """SQLAlchemy URL of the database holding schedules and run history."""
    redis_url: str | None = None
    """Redis URL for locks, live logs and change notices (redis, rediss, unix, or memory://
    for the in-process stand-in); unset means `celery_broker_url`."""
    api_keys: KeyList = Field(default_factory=list)
    """API keys with full access: a JSON object naming each key (`{"ci-bot": "…"}`, shown
    as `key:ci-bot` in the audit trail), a JSON list or a comma-separated string."""
    api_read_only_keys: KeyList = Field(default_factory=list)
    """API keys that may only read, in the same forms as `api_keys` (shown as
    `read-key:<name>`)."""
    api_min_key_length: int = 16
    """Shortest API key the API accepts (the demo and the pytest plugin's client accept
    any); the audit trail names keys by position, never by a hash of the key."""
    key_prefix: str = "dataforge"
    """Namespace of every Redis key the library writes."""
    task_name_prefix: str = ""
    """Prefix every registered task name must start with, e.g. `dataforge.`; empty disables
    the rule."""
    lock_ttl_seconds: int = 600
    """Lifetime of a run's lock, in seconds."""
    lock_auto_renew: bool = True
    """Extend a running task's lock in the background before it expires."""
    log_console_echo: bool = True
    """`task_log()` also prints each line to the worker console."""
    log_max_bytes: int = 1_048_576
    """Largest log kept per run, in bytes; the rest is cut."""
    log_ttl_seconds: int = 604800
    """How long a run's log stays in Redis, in seconds."""
    log_flush_interval: float = Field(0.2, allow_inf_nan=False)
    """Seconds between pushes of buffered log lines."""
    log_flush_lines: int = 100
    """Buffered log lines that force a push."""
    result_max_bytes: int = 65536
    """Largest task result stored on a run, in bytes of JSON."""
    execution_retention_days: int = 30
    """Days finished runs are kept before the retention task deletes them."""
    audit_retention_days: int = 365
    """Days audit-trail entries are kept before the retention task deletes them."""
    lost_run_grace_seconds: int = 60
    """Seconds past its time limit before a silent run is marked lost."""
    misfire_grace_seconds: int = 60
    """A slot later than this, in seconds, is a misfire, handled by the schedule's policy."""
    catch_up_max_runs: int = 10
    """Most missed slots the `catch_up` misfire policy sends at once."""
    backfill_max_slots: int = 1000
    """Most slots one backfill may create; a range holding more is refused (422)."""
    api_max_body_bytes: int = 1_048_576
    """Largest request body the API accepts, in bytes."""
    sse_max_streams: int = 100
    """Most live-log streams the API serves at once."""
    sse_max_streams_per_key: int = 10
    """Most live-log streams one caller (API key or principal) holds at once."""
    sse_max_stream_seconds: int = 3600
    """Longest a live-log stream stays open; the client resumes with `Last-Event-ID`."""
    sse_write_timeout_seconds: float = 30.0
    """A live-log stream whose client takes no data for this long is closed."""
    history_writer_in_worker: bool = True
    """Run a history writer in every Celery worker's main process (turn off when you run
    `dataforge-scheduler history-writer` processes instead)."""
    history_batch_size: int = 500
    """Most outbox records a history writer applies in one transaction."""
    history_block_seconds: float = Field(0.5, allow_inf_nan=False)
    """Longest a history writer waits for a new record before it looks again."""
    history_linger_seconds: float = Field(0.1, allow_inf_nan=False)
    """How long a history writer gathers more records after a read that did not fill a
    batch: a run shorter than this has its start and end written in one statement
    (0 writes each read at once)."""
    history_claim_after_seconds: int = 30
    """Records another writer read and left unacknowledged this long (it died) are
    claimed and applied."""
    history_retry_max_seconds: float = Field(30.0, allow_inf_nan=False)
    """Longest pause between a history writer's attempts while the database is down."""

    # ------------------------------------------------------------ validators

    @field_validator("*")
    @classmethod
    def _check_field(cls, value: Any, info: ValidationInfo) -> Any:
        check = CHECKS.get(info.field_name or "")
        if check is not None:
            check(info.field_name or "", value)
        return value

    @field_validator("api_keys", "api_read_only_keys", mode="before")
    @classmethod
    def _keys_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        return split_keys(info.field_name or "", value)

    @model_validator(mode="after")
    def _check_model(self) -> Self:
        cross_check(self)
        return self

    # ------------------------------------------------------------ doors

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Settings from ``DATAFORGE_*`` environment variables; ``overrides`` win.

        Only the process environment is read (no ``.env`` file). Raises
        ``ConfigurationError`` listing every problem, one per line, each naming the
        environment variable (or the override keyword) and the bad value, secrets
        masked; ``errors`` holds them as ``{"field", "source", "message"}`` dicts.
        """
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = [cls._describe(error, overrides) for error in exc.errors()]
        except SettingsError as exc:
            problems = [{"field": "", "source": "environment", "message": str(exc)}]
        lines = "\n".join(f"  {p['source']}: {p['message']}" for p in problems)
        raise ConfigurationError(
            f"invalid dataforge-scheduler settings ({len(problems)} problem(s)):\n{lines}",
            field=problems[0]["field"],
            errors=problems,
        )

    @classmethod
    def env_var(cls, name: str) -> str:
        """The environment variable that sets field ``name``."""
        field = cls.model_fields.get(name)
        if field is not None and isinstance(field.validation_alias, str):
            return field.validation_alias.upper()
        return f"{cls.model_config.get('env_prefix') or ''}{name}".upper()

    @classmethod
    def _describe(cls, error: Any, overrides: dict[str, Any]) -> dict[str, str]:
        ctx = error.get("ctx") or {}
        loc = error.get("loc") or ()
        fields = tuple(ctx.get("fields") or ()) or ((str(loc[0]),) if loc else ("",))
        source = ", ".join(f"{f}=" if f in overrides else cls.env_var(f) for f in fields if f)
        if error.get("type") == ERROR:
            message = str(ctx["reason"])
        else:
            shown = cls._redact_value(fields[0], error.get("input"))
            message = f"{fields[0]}: {error.get('msg')} (got {shown!r})"
        return {"field": fields[0], "source": source or "settings", "message": message}

    # ------------------------------------------------------------ derived

    @property
    def effective_redis_url(self) -> str:
        """``redis_url``, or the (first) broker URL when it is unset."""
        if self.redis_url is not None:
            return self.redis_url
        return self.celery_broker_url.split(";")[0].strip()

    def celery_config(self) -> dict[str, Any]:
        """The keys ``setup()`` applies to ``app.conf``.

        Celery settings plus ``dataforge_task_*`` retry defaults that ``DataForgeTask``
        reads (kept out of ``task_annotations``, which would touch the host's other
        tasks). ``task_soft_time_limit`` is left out when the hard limit is 1 second.
        """
        timeout = self.celery_task_default_timeout
        transport = {"visibility_timeout": self.celery_broker_visibility_timeout}
        config: dict[str, Any] = {
            "broker_url": self.celery_broker_url,
            "result_backend": self.celery_result_backend,
            "timezone": self.celery_timezone,
            "enable_utc": True,
            "broker_transport_options": dict(transport),
            "task_time_limit": timeout,
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "task_track_started": True,
            "worker_concurrency": self.celery_worker_concurrency,
            "worker_prefetch_multiplier": self.celery_worker_prefetch_multiplier,
            "broker_connection_retry_on_startup": True,
            "beat_scheduler": "dataforge_scheduler.DatabaseScheduler",
            "beat_max_loop_interval": self.celery_beat_sync_every,
            "dataforge_task_max_retries": self.celery_task_default_max_retries,
            "dataforge_task_retry_delay": self.celery_task_retry_delay,
            "dataforge_task_retry_backoff": self.celery_task_retry_backoff,
        }
        soft = timeout - min(60, max(1, timeout // 10))
        if soft > 0:
            config["task_soft_time_limit"] = soft
        if urlsplit(self.celery_result_backend).scheme in REDIS_BACKEND_SCHEMES:
            config["result_backend_transport_options"] = dict(transport)
        return config

    def redacted(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, URL passwords and API keys masked (for logs)."""
        dumped = self.model_dump(mode="json")
        return {name: self._redact_value(name, value) for name, value in dumped.items()}

    @classmethod
    def _redact_value(cls, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in cls.secret_fields:
            if isinstance(value, dict):  # the names are not secret, the keys are
                return dict.fromkeys(value, MASK)
            return [MASK for _ in value] if isinstance(value, list | tuple) else MASK
        if name in cls.url_fields or name.endswith("_url"):
            return mask_url(str(value))
        return value

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, self._redact_value(name, value) if name else value


def _render_default(value: Any) -> str:
    return f"`{value}`" if isinstance(value, str) and value else f"`{value!r}`"


def settings_table_markdown(settings_cls: type[Settings] = Settings) -> str:
    """The configuration table (setting, env var, default, description) as Markdown."""
    rows = [
        "| setting | env var | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in settings_cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        env = settings_cls.env_var(name)
        rows.append(f"| `{name}` | `{env}` | {_render_default(default)} | {description} |")
    return "\n".join(rows) + "\n"
