"""The rules behind ``Settings``: what each field accepts, the rules that span several
fields, and how URLs and secrets are masked wherever a setting is quoted.

Each check raises a pydantic custom error carrying the reason and the fields involved,
which ``Settings.from_env()`` turns into messages naming the environment variables.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic_core import PydanticCustomError
from pydantic_settings import NoDecode

from dataforge_scheduler.core.naming import check_key_name, check_key_prefix
from dataforge_scheduler.errors import ConfigurationError

if TYPE_CHECKING:
    from dataforge_scheduler.settings import Settings

__all__ = [
    "CHECKS",
    "ERROR",
    "MASK",
    "REDIS_BACKEND_SCHEMES",
    "REDIS_URL_SCHEMES",
    "KeyList",
    "cross_check",
    "key_values",
    "mask_url",
    "split_keys",
]

#: Schemes ``redis_url`` accepts; ``memory://`` is the in-process stand-in (demo, fixtures).
REDIS_URL_SCHEMES = frozenset({"redis", "rediss", "unix", "memory"})
REDIS_BACKEND_SCHEMES = frozenset({"redis", "rediss", "redis+socket", "sentinel"})
ERROR = "dataforge_settings"
MASK = "***"
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# SQLAlchemy's URL grammar: dialect[+driver]://[user[:password]@][host][:port][/database][?query]
_SQLALCHEMY_URL_RE = re.compile(
    r"^(?P<name>[\w+]+)://"
    r"(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:(?:\[(?P<ipv6>[^/?]+)\]|(?P<host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?"
    r"(?:/(?P<database>[^?]*))?(?:\?(?P<query>.*))?$",
    re.DOTALL,
)
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "secret", "token"})

# Durations, counts and sizes: must be > 0. Retries may be 0; a prefetch multiplier of 0
# is Celery's "no limit".
_POSITIVE = (
    "api_min_key_length",
    "audit_retention_days",
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
    "backfill_max_slots",
    "api_max_body_bytes",
    "sse_max_streams",
    "sse_max_streams_per_key",
    "sse_max_stream_seconds",
    "sse_write_timeout_seconds",
    "history_batch_size",
    "history_block_seconds",
    "history_claim_after_seconds",
    "history_retry_max_seconds",
)
_NON_NEGATIVE = (
    "celery_task_default_max_retries",
    "celery_worker_prefetch_multiplier",
    "history_linger_seconds",
)

#: API keys: a list (the audit trail names them ``key:1``, ``key:2``...) or a mapping of
#: the operator's names to keys (named ``key:<name>``).
KeyList = Annotated[list[str] | dict[str, str], NoDecode]


def key_values(keys: list[str] | dict[str, str]) -> list[str]:
    """The keys themselves, from either form of ``KeyList``."""
    return list(keys.values()) if isinstance(keys, dict) else list(keys)


def _problem(reason: str, *fields: str) -> PydanticCustomError:
    # "{reason}" keeps braces inside values from being read as template fields; "fields"
    # lets from_env() name every env var behind a rule that spans several fields.
    return PydanticCustomError(ERROR, "{reason}", {"reason": reason, "fields": fields})


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
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    path, qmark, query = tail.partition("?")
    if qmark:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs]
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
    # SQLAlchemy's own grammar, checked here so the settings need no database library
    match = _SQLALCHEMY_URL_RE.match(url)
    port = match.group("port") if match else None
    if match is None or (port and not port.isdigit()):
        raise _problem(
            f"{field} ({mask_url(url)!r}) is not a SQLAlchemy URL, "
            "e.g. postgresql+psycopg://user@host/db",
            field,
        )


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


def _check_keys(field: str, keys: list[str] | dict[str, str]) -> None:
    if isinstance(keys, dict):
        for name in keys:
            try:
                check_key_name(name, field=field)
            except ConfigurationError as exc:
                raise _problem(exc.message, field) from None
        labelled = [(repr(name), key) for name, key in keys.items()]
    else:
        labelled = [(str(index), key) for index, key in enumerate(keys)]
    for label, key in labelled:  # never quote a key: it is a secret
        if not key.strip():
            raise _problem(f"{field}[{label}] is empty", field)
        if key != key.strip():
            raise _problem(f"{field}[{label}] has leading or trailing whitespace", field)


def _check_key_prefix(field: str, value: str) -> None:
    try:
        check_key_prefix(value)  # the one rule, shared with redis.keys.Keys
    except ConfigurationError as exc:
        raise _problem(exc.message, field) from None


def _check_task_name_prefix(field: str, value: str) -> None:
    if any(c.isspace() for c in value):
        raise _problem(f"{field} ({value!r}) contains whitespace", field)


CHECKS: dict[str, Callable[[str, Any], None]] = {
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


def split_keys(field: str, value: Any) -> Any:
    """Keys as the environment gives them: a JSON object of names to keys, a JSON list,
    or comma-separated keys."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if not text.startswith(("[", "{")):
        return [part.strip() for part in text.split(",")]
    kind = "a JSON list" if text.startswith("[") else "a JSON object"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # The message gives only the position: the text holds secrets.
        raise _problem(
            f"{field} starts with {text[0]!r} but is not {kind} (line {exc.lineno}, column "
            f"{exc.colno}); use a JSON object of names to keys, a JSON list or "
            "comma-separated keys",
            field,
        ) from exc


def cross_check(s: Settings) -> None:
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
    if set(key_values(s.api_keys)) & set(key_values(s.api_read_only_keys)):
        raise _problem(
            "a key appears in both api_keys and api_read_only_keys: its access is ambiguous",
            "api_keys",
            "api_read_only_keys",
        )
