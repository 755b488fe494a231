"""Every setting of dataforge-scheduler, in one pydantic-settings model.

``Settings`` keeps the seed's key names (``celery_*``) and adds the library's own
(database, Redis, API keys, locks, logs, retention). Each field reads the environment
variable ``DATAFORGE_<FIELD>``; values are validated once, here, with messages that
name the field and the value (secrets masked). This module also renders the Celery
configuration that ``setup()`` applies and the configuration table the docs embed.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dataforge_scheduler.errors import ConfigurationError

__all__ = ["REDIS_URL_SCHEMES", "Settings", "mask_url", "settings_table_markdown"]

#: Schemes ``redis_url`` accepts; ``memory://`` is the in-process stand-in (demo, fixtures).
REDIS_URL_SCHEMES = frozenset({"redis", "rediss", "unix", "memory"})
_REDIS_BACKEND_SCHEMES = frozenset({"redis", "rediss", "redis+socket", "sentinel"})
_ERROR = "dataforge_settings"
_MASK = "***"
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "secret", "token"})
_GLOB_CHARS = frozenset("*?[]")

# Durations, counts and sizes: must be > 0. Retries may be 0; a prefetch multiplier of 0
# is Celery's "no limit".
_POSITIVE = (
    "celery_broker_visibility_timeout",
    "celery_task_default_timeout",
    "celery_task_retry_delay",
    "celery_worker_concurrency",
    "celery_beat_sync_every",
    "lock_ttl_seconds",
    "log_max_bytes",
    "log_ttl_seconds",
    "log_flush_interval",
    "log_flush_lines",
    "result_max_bytes",
    "execution_retention_days",
    "lost_run_grace_seconds",
    "misfire_grace_seconds",
    "catch_up_max_runs",
    "api_max_body_bytes",
    "sse_max_streams",
)
_NON_NEGATIVE = ("celery_task_default_max_retries", "celery_worker_prefetch_multiplier")

KeyList = Annotated[list[str], NoDecode]


def _problem(reason: str, *fields: str) -> PydanticCustomError:
    # "{reason}" keeps braces inside values from being read as template fields; "fields"
    # lets from_env() name every env var behind a rule that spans several fields.
    return PydanticCustomError(_ERROR, "{reason}", {"reason": reason, "fields": fields})


def mask_url(url: str) -> str:
    """``url`` with any password (userinfo or ``?password=``) replaced by ``***``.

    Works part by part on ``;``-separated failover lists, and on strings that are not
    valid URLs, so error messages can quote bad input without leaking a secret.
    """
    return ";".join(_mask_one(part) for part in url.split(";"))


def _mask_one(url: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{_MASK}@{hostport}"
    path, qmark, query = tail.partition("?")
    if qmark:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, _MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs]
        tail = f"{path}?{urlencode(masked, safe='*/')}"
    return f"{head}://{netloc}{tail}"


def _check_url(field: str, url: str) -> None:
    """Raise unless ``url`` has a scheme and a well-formed authority."""
    if not _URL_RE.match(url):
        raise _problem(f"{field} ({mask_url(url)!r}) is not a URL: it needs a scheme", field)
    try:
        urlsplit(url).port  # noqa: B018 -- reading .port is what validates it
    except ValueError as exc:
        raise _problem(
            f"{field} ({mask_url(url)!r}) does not parse as a URL: {exc}", field
        ) from exc


def _check_broker_url(field: str, value: str) -> None:
    for part in value.split(";"):
        _check_url(field, part.strip())


def _check_redis_url(field: str, url: str | None) -> None:
    if url is None:
        return
    _check_url(field, url)
    parts = urlsplit(url)
    if parts.scheme not in REDIS_URL_SCHEMES:
        accepted = ", ".join(f"{s}://" for s in sorted(REDIS_URL_SCHEMES))
        raise _problem(f"{field} ({mask_url(url)!r}) must use one of {accepted}", field)
    db = parts.path.strip("/")
    if parts.scheme in {"redis", "rediss"} and db and not db.isdigit():
        raise _problem(f"{field} ({mask_url(url)!r}): path must be a database number", field)


def _check_database_url(field: str, url: str) -> None:
    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise _problem(
            f"{field} ({mask_url(url)!r}) is not a SQLAlchemy URL, "
            "e.g. postgresql+psycopg://user@host/db",
            field,
        ) from exc


def _check_timezone(field: str, value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise _problem(
            f"{field} ({value!r}) is not a known IANA time zone, e.g. 'UTC' or 'Asia/Shanghai'",
            field,
        ) from exc


def _check_positive(field: str, value: float) -> None:
    if value <= 0:
        raise _problem(f"{field} must be greater than 0, got {value!r}", field)


def _check_non_negative(field: str, value: int) -> None:
    if value < 0:
        raise _problem(f"{field} must be 0 or more, got {value!r}", field)


def _check_keys(field: str, keys: list[str]) -> None:
    for index, key in enumerate(keys):  # never quote a key: it is a secret
        if not key.strip():
            raise _problem(f"{field}[{index}] is empty", field)
        if key != key.strip():
            raise _problem(f"{field}[{index}] has leading or trailing whitespace", field)


def _check_key_prefix(field: str, value: str) -> None:
    bad = "".join(sorted({c for c in value if c.isspace() or c in _GLOB_CHARS}))
    if not value or bad:
        why = f"contains {bad!r}" if bad else "is empty"
        raise _problem(
            f"{field} ({value!r}) {why}: it must be non-empty, without whitespace "
            "or the glob characters * ? [ ]",
            field,
        )


def _check_task_name_prefix(field: str, value: str) -> None:
    if any(c.isspace() for c in value):
        raise _problem(f"{field} ({value!r}) contains whitespace", field)


_CHECKS: dict[str, Callable[[str, Any], None]] = {
    **dict.fromkeys(_POSITIVE, _check_positive),
    **dict.fromkeys(_NON_NEGATIVE, _check_non_negative),
    **dict.fromkeys(("api_keys", "api_read_only_keys"), _check_keys),
    "celery_broker_url": _check_broker_url,
    "celery_result_backend": _check_url,
    "celery_timezone": _check_timezone,
    "database_url": _check_database_url,
    "redis_url": _check_redis_url,
    "key_prefix": _check_key_prefix,
    "task_name_prefix": _check_task_name_prefix,
}


def _split_keys(field: str, value: Any) -> Any:
    """A JSON list or comma-separated keys (as the environment gives them) as a list."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if not text.startswith("["):
        return [part.strip() for part in text.split(",")]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _problem(
            f"{field} starts with '[' but is not a JSON list (line {exc.lineno}, column "
            f"{exc.colno}); use a JSON list or comma-separated keys",
            field,
        ) from exc


def _cross_check(s: Settings) -> None:
    """The rules that span several fields."""
    timeout, visibility = s.celery_task_default_timeout, s.celery_broker_visibility_timeout
    if visibility <= 2 * timeout:
        raise _problem(
            f"celery_broker_visibility_timeout ({visibility}) must exceed "
            f"2 × celery_task_default_timeout ({timeout} → {2 * timeout}): "
            "otherwise Redis redelivers long tasks and they run twice",
            "celery_broker_visibility_timeout",
            "celery_task_default_timeout",
        )
    if s.redis_url is None:
        first = s.celery_broker_url.split(";")[0].strip()
        scheme = urlsplit(first).scheme
        if scheme not in REDIS_URL_SCHEMES:
            raise _problem(
                f"redis_url is unset and celery_broker_url ({mask_url(first)!r}) is not a "
                f"Redis URL (scheme {scheme!r}): set redis_url for locks and logs",
                "redis_url",
                "celery_broker_url",
            )
    if set(s.api_keys) & set(s.api_read_only_keys):
        raise _problem(
            "a key appears in both api_keys and api_read_only_keys: its access is ambiguous",
            "api_keys",
            "api_read_only_keys",
        )


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
    ``api_read_only_keys`` take a JSON list or a comma-separated string from the
    environment. ``repr()`` and ``redacted()`` mask URL passwords and API keys.
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
    """API keys with full access; a JSON list or a comma-separated string."""
    api_read_only_keys: KeyList = Field(default_factory=list)
    """API keys that may only read; a JSON list or a comma-separated string."""
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
    lost_run_grace_seconds: int = 60
    """Seconds past its time limit before a silent run is marked lost."""
    misfire_grace_seconds: int = 60
    """A slot later than this, in seconds, is a misfire, handled by the schedule's policy."""
    catch_up_max_runs: int = 10
    """Most missed slots the `catch_up` misfire policy sends at once."""
    api_max_body_bytes: int = 1_048_576
    """Largest request body the API accepts, in bytes."""
    sse_max_streams: int = 100
    """Most live-log streams the API serves at once."""

    # ------------------------------------------------------------ validators

    @field_validator("*")
    @classmethod
    def _check_field(cls, value: Any, info: ValidationInfo) -> Any:
        check = _CHECKS.get(info.field_name or "")
        if check is not None:
            check(info.field_name or "", value)
        return value

    @field_validator("api_keys", "api_read_only_keys", mode="before")
    @classmethod
    def _keys_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        return _split_keys(info.field_name or "", value)

    @model_validator(mode="after")
    def _check_model(self) -> Self:
        _cross_check(self)
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
        if error.get("type") == _ERROR:
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
        if urlsplit(self.celery_result_backend).scheme in _REDIS_BACKEND_SCHEMES:
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
            return [_MASK for _ in value] if isinstance(value, list | tuple) else _MASK
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
