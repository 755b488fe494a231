"""Settings: seed defaults, every validation rule, the environment door, Celery config, secrets."""

from __future__ import annotations

import json
import os
import pickle
from typing import Any

import pytest
from celery.app.defaults import DEFAULTS as CELERY_DEFAULTS
from pydantic import ValidationError

from dataforge_scheduler.errors import ConfigurationError, DataForgeError
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.settings import Settings, key_values, mask_url, settings_table_markdown

SEED_DEFAULTS: dict[str, Any] = {
    "celery_broker_url": "redis://localhost:6379/0",
    "celery_result_backend": "redis://localhost:6379/1",
    "celery_timezone": "UTC",
    "celery_broker_visibility_timeout": 36000,
    "celery_task_default_timeout": 14400,
    "celery_task_default_max_retries": 3,
    "celery_task_retry_delay": 60,
    "celery_task_retry_backoff": True,
    "celery_worker_concurrency": 4,
    "celery_worker_prefetch_multiplier": 1,
    "celery_beat_sync_every": 60,
}
LIBRARY_DEFAULTS: dict[str, Any] = {
    "database_url": "postgresql+psycopg://localhost:5432/dataforge",
    "redis_url": None,
    "api_keys": [],
    "api_read_only_keys": [],
    "api_min_key_length": 16,
    "sse_max_streams_per_key": 10,
    "sse_max_stream_seconds": 3600,
    "sse_write_timeout_seconds": 30.0,
    "key_prefix": "dataforge",
    "task_name_prefix": "",
    "lock_ttl_seconds": 600,
    "lock_auto_renew": True,
    "log_console_echo": True,
    "log_max_bytes": 1_048_576,
    "log_ttl_seconds": 604800,
    "log_flush_interval": 0.2,
    "log_flush_lines": 100,
    "result_max_bytes": 65536,
    "execution_retention_days": 30,
    "audit_retention_days": 365,
    "lost_run_grace_seconds": 60,
    "misfire_grace_seconds": 60,
    "catch_up_max_runs": 10,
    "backfill_max_slots": 1000,
    "api_max_body_bytes": 1_048_576,
    "sse_max_streams": 100,
    "history_writer_in_worker": True,
    "history_batch_size": 500,
    "history_block_seconds": 0.5,
    "history_linger_seconds": 0.1,
    "history_claim_after_seconds": 30,
    "history_retry_max_seconds": 30.0,
}
POSITIVE_FIELDS = [
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
    "history_batch_size",
    "history_block_seconds",
    "history_claim_after_seconds",
    "history_retry_max_seconds",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read DATAFORGE_* on construction: start every test from a clean slate."""
    for name in list(os.environ):
        if name.upper().startswith("DATAFORGE_"):
            monkeypatch.delenv(name)


def _error_text(**kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        Settings(**kwargs)
    return str(info.value)


# ---------------------------------------------------------------- defaults


def test_defaults_are_the_seeds_and_the_librarys() -> None:
    settings = Settings()
    assert settings.model_dump() == SEED_DEFAULTS | LIBRARY_DEFAULTS


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.key_prefix = "other"  # type: ignore[misc]


def test_unknown_keyword_is_rejected() -> None:
    assert "celery_broker" in _error_text(celery_broker="redis://x")


# ---------------------------------------------------------------- validation rules


@pytest.mark.parametrize("visibility", [3600, 28800])
def test_visibility_timeout_must_exceed_twice_the_task_timeout(visibility: int) -> None:
    text = _error_text(celery_broker_visibility_timeout=visibility)
    assert f"celery_broker_visibility_timeout ({visibility})" in text
    assert "celery_task_default_timeout (14400 → 28800)" in text
    assert "run twice" in text


def test_visibility_just_above_twice_the_timeout_is_accepted() -> None:
    settings = Settings(celery_task_default_timeout=100, celery_broker_visibility_timeout=201)
    assert settings.celery_broker_visibility_timeout == 201


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_unknown_timezone_is_rejected(zone: str) -> None:
    text = _error_text(celery_timezone=zone)
    assert f"celery_timezone ({zone!r}) is not a known IANA time zone" in text


def test_known_timezone_is_accepted() -> None:
    assert Settings(celery_timezone="Asia/Shanghai").celery_timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("celery_broker_url", "localhost:6379", "('localhost:6379') is not a URL"),
        ("celery_broker_url", "redis://host:99999/0", "('redis://host:99999/0') does not parse"),
        ("celery_broker_url", "redis://a:6379/0;nohost", "('nohost') is not a URL"),
        ("celery_result_backend", "just-a-word", "('just-a-word') is not a URL"),
        ("redis_url", "http://host:6379/0", "('http://host:6379/0') must use one of memory://"),
        ("redis_url", "redis://host:6379/zero", "('redis://host:6379/zero'): path must be"),
        ("redis_url", "redis:/host", "('redis:/host') is not a URL"),
        ("database_url", "not a url", "('not a url') is not a SQLAlchemy URL"),
        ("database_url", "postgresql://h:port/db", "('postgresql://h:port/db') is not a SQLAlc"),
    ],
)
def test_malformed_urls_are_rejected(field: str, value: str, expected: str) -> None:
    assert f"{field} {expected}" in _error_text(**{field: value})


@pytest.mark.parametrize(
    "url", ["redis://h:6379/2", "rediss://:pw@h:6380", "unix:///tmp/redis.sock", "memory://"]
)
def test_accepted_redis_urls(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url


def test_failover_broker_and_non_redis_backends_are_accepted() -> None:
    settings = Settings(
        celery_broker_url="redis://a:6379/0;redis://b:6379/0",
        celery_result_backend="db+postgresql://u@h/db",
        database_url="sqlite://",
    )
    assert settings.celery_broker_url.endswith("b:6379/0")


def test_malformed_url_error_does_not_leak_the_password() -> None:
    text = _error_text(redis_url="http://user:s3cret@host/0")
    assert "s3cret" not in text
    assert "http://user:***@host/0" in text


@pytest.mark.parametrize("field", POSITIVE_FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_durations_counts_and_sizes_must_be_positive(field: str, value: int) -> None:
    kwargs: dict[str, Any] = {field: value}
    if field == "celery_task_default_timeout":
        kwargs["celery_broker_visibility_timeout"] = 36000
    text = _error_text(**kwargs)
    assert f"{field} must be greater than 0, got {value}" in text


@pytest.mark.parametrize(
    "field",
    [
        "celery_task_default_max_retries",
        "celery_worker_prefetch_multiplier",
        "history_linger_seconds",
    ],
)
def test_retries_prefetch_and_linger_may_be_zero_but_not_negative(field: str) -> None:
    kwargs: dict[str, Any] = {field: 0}
    assert getattr(Settings(**kwargs), field) == 0
    assert f"{field} must be 0 or more, got -1" in _error_text(**{field: -1})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_flush_interval_must_be_finite(value: float) -> None:
    assert "log_flush_interval" in _error_text(log_flush_interval=value)


@pytest.mark.parametrize(
    ("value", "why"),
    [("", "non-empty"), ("a b", "contains ' '"), ("df*", "contains '*'"), ("df\\x", "'\\\\'")],
)
def test_key_prefix_rules(value: str, why: str) -> None:
    text = _error_text(key_prefix=value)
    assert "key_prefix" in text
    assert why in text


@pytest.mark.parametrize(
    "value",
    ["", "a b", "a\tb", "df*", "df?", "[x]", "df\\x", "ok", "myapp:{df}", "ünï", "a-b.c"],
)
def test_settings_accept_exactly_the_prefixes_keys_accept(value: str) -> None:
    def accepted(make: Any) -> bool:
        try:
            make(value)
        except (ValueError, ConfigurationError):
            return False
        return True

    assert accepted(lambda v: Settings(key_prefix=v)) == accepted(Keys)
    assert accepted(Keys) == (value in {"ok", "myapp:{df}", "ünï", "a-b.c"})


def test_key_prefix_may_hold_colons_and_braces() -> None:
    assert Settings(key_prefix="myapp:{df}").key_prefix == "myapp:{df}"


def test_task_name_prefix_rejects_whitespace() -> None:
    assert "task_name_prefix ('my app.')" in _error_text(task_name_prefix="my app.")
    assert Settings(task_name_prefix="dataforge.").task_name_prefix == "dataforge."


@pytest.mark.parametrize(
    ("keys", "expected"),
    [(["good", ""], "api_keys[1] is empty"), ([" padded"], "api_keys[0] has leading")],
)
def test_api_keys_must_be_non_empty_and_trimmed(keys: list[str], expected: str) -> None:
    text = _error_text(api_keys=keys)
    assert expected in text
    assert "padded" not in text


def test_a_key_cannot_be_both_full_and_read_only() -> None:
    text = _error_text(api_keys=["k1", "shared"], api_read_only_keys=["shared"])
    assert "both api_keys and api_read_only_keys" in text
    assert "shared" not in text


def test_non_redis_broker_needs_an_explicit_redis_url() -> None:
    text = _error_text(celery_broker_url="amqp://guest:pw@rabbit//")
    assert "redis_url is unset" in text
    assert "amqp://guest:***@rabbit//" in text
    settings = Settings(celery_broker_url="amqp://rabbit//", redis_url="redis://r:6379/0")
    assert settings.effective_redis_url == "redis://r:6379/0"


# ---------------------------------------------------------------- environment


def test_from_env_reads_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_CELERY_TIMEZONE", "Asia/Shanghai")
    monkeypatch.setenv("DATAFORGE_CELERY_WORKER_CONCURRENCY", "8")
    monkeypatch.setenv("DATAFORGE_LOCK_AUTO_RENEW", "false")
    monkeypatch.setenv("DATAFORGE_LOG_FLUSH_INTERVAL", "0.5")
    monkeypatch.setenv("DATAFORGE_TEST_DATABASE_URL", "ignored: it matches no field")
    settings = Settings.from_env()
    assert settings.celery_timezone == "Asia/Shanghai"
    assert settings.celery_worker_concurrency == 8
    assert settings.lock_auto_renew is False
    assert settings.log_flush_interval == 0.5


def test_from_env_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_KEY_PREFIX", "from-env")
    monkeypatch.setenv("DATAFORGE_TASK_NAME_PREFIX", "env.")
    settings = Settings.from_env(key_prefix="from-code")
    assert settings.key_prefix == "from-code"
    assert settings.task_name_prefix == "env."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["a", "b"]', ["a", "b"]),
        ("a,b", ["a", "b"]),
        (" a , b ", ["a", "b"]),
        ("single", ["single"]),
        ("", []),
        ("[]", []),
    ],
)
def test_api_keys_from_env_json_or_comma(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("DATAFORGE_API_KEYS", raw)
    monkeypatch.setenv("DATAFORGE_API_READ_ONLY_KEYS", "ro1,ro2")
    settings = Settings.from_env()
    assert settings.api_keys == expected
    assert settings.api_read_only_keys == ["ro1", "ro2"]


def test_api_keys_from_env_as_a_json_object_of_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_API_KEYS", '{"ci-bot": "k-ci", "ops.alice": "k-alice"}')
    monkeypatch.setenv("DATAFORGE_API_READ_ONLY_KEYS", '{"grafana": "k-grafana"}')
    settings = Settings.from_env()
    assert settings.api_keys == {"ci-bot": "k-ci", "ops.alice": "k-alice"}
    assert settings.api_read_only_keys == {"grafana": "k-grafana"}
    assert settings.redacted()["api_keys"] == {"ci-bot": "***", "ops.alice": "***"}
    assert key_values(settings.api_keys) == ["k-ci", "k-alice"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"ci bot": "k"}', "key name 'ci bot' is invalid"),
        ('{"": "k"}', "key name '' is invalid"),
        ('{"ci-bot": ""}', "api_keys['ci-bot'] is empty"),
        ('{"ci-bot": " secret-pad"}', "api_keys['ci-bot'] has leading or trailing whitespace"),
        ('{"ci-bot": "secret-k1",}', "api_keys starts with '{' but is not a JSON object"),
        ('{"ci-bot": 7}', "DATAFORGE_API_KEYS"),
    ],
)
def test_named_keys_from_env_are_checked_without_quoting_a_key(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: str
) -> None:
    monkeypatch.setenv("DATAFORGE_API_KEYS", raw)
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    assert expected in str(info.value)
    assert "secret" not in str(info.value)


def test_a_named_key_cannot_also_be_read_only() -> None:
    text = _error_text(api_keys={"ci-bot": "shared"}, api_read_only_keys={"grafana": "shared"})
    assert "both api_keys and api_read_only_keys" in text


def test_from_env_names_the_variable_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_CELERY_TIMEZONE", "Mars/Base")
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    error = info.value
    assert isinstance(error, DataForgeError)
    assert "DATAFORGE_CELERY_TIMEZONE: celery_timezone ('Mars/Base')" in str(error)
    assert error.field == "celery_timezone"  # type: ignore[attr-defined]
    assert error.errors[0]["source"] == "DATAFORGE_CELERY_TIMEZONE"  # type: ignore[attr-defined]


def test_from_env_lists_every_problem_one_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_CELERY_TIMEZONE", "Nowhere")
    monkeypatch.setenv("DATAFORGE_LOG_FLUSH_LINES", "lots")
    monkeypatch.setenv("DATAFORGE_SSE_MAX_STREAMS", "0")
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(key_prefix="bad prefix")
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 4
    assert any(line.strip().startswith("DATAFORGE_CELERY_TIMEZONE:") for line in lines)
    assert any("DATAFORGE_LOG_FLUSH_LINES" in line and "'lots'" in line for line in lines)
    assert any("DATAFORGE_SSE_MAX_STREAMS" in line and "got 0" in line for line in lines)
    assert any(line.strip().startswith("key_prefix=:") for line in lines)
    assert len(info.value.errors) == 4  # type: ignore[attr-defined]


def test_from_env_names_both_variables_of_a_cross_field_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATAFORGE_CELERY_BROKER_VISIBILITY_TIMEOUT", "3600")
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    text = str(info.value)
    assert (
        "DATAFORGE_CELERY_BROKER_VISIBILITY_TIMEOUT, DATAFORGE_CELERY_TASK_DEFAULT_TIMEOUT" in text
    )
    assert "celery_broker_visibility_timeout (3600)" in text


def test_from_env_errors_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_API_KEYS", '["topsecret", ')
    monkeypatch.setenv("DATAFORGE_DATABASE_URL", "postgresql://u:hunter2@h:port/db")
    monkeypatch.setenv("DATAFORGE_API_READ_ONLY_KEYS", '["k", 42]')
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    text = str(info.value)
    assert "DATAFORGE_API_KEYS" in text
    assert "DATAFORGE_DATABASE_URL" in text
    assert "DATAFORGE_API_READ_ONLY_KEYS" in text
    for secret in ("topsecret", "hunter2", "42"):
        assert secret not in text


def test_configuration_error_pickles_with_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_CELERY_TIMEZONE", "Nowhere")
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)
    assert clone.errors == info.value.errors  # type: ignore[attr-defined]


class HostSettings(Settings):
    """A host application's settings, adding its own fields."""

    feature_flag: bool = False
    """Turns the host's feature on."""
    report_hour: int = 6
    """Hour of the daily report."""


def test_host_subclass_reads_its_fields_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_FEATURE_FLAG", "1")
    monkeypatch.setenv("DATAFORGE_CELERY_TIMEZONE", "Europe/Paris")
    settings = HostSettings.from_env(report_hour=7)
    assert isinstance(settings, HostSettings)
    assert settings.feature_flag is True
    assert settings.report_hour == 7
    assert settings.celery_timezone == "Europe/Paris"
    assert "DATAFORGE_FEATURE_FLAG" in settings_table_markdown(HostSettings)


def test_host_subclass_errors_name_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFORGE_REPORT_HOUR", "noon")
    with pytest.raises(ConfigurationError, match="DATAFORGE_REPORT_HOUR"):
        HostSettings.from_env()


# ---------------------------------------------------------------- derived values


def test_celery_config_contents() -> None:
    config = Settings(celery_timezone="Asia/Shanghai").celery_config()
    assert config == {
        "broker_url": "redis://localhost:6379/0",
        "result_backend": "redis://localhost:6379/1",
        "timezone": "Asia/Shanghai",
        "enable_utc": True,
        "broker_transport_options": {"visibility_timeout": 36000},
        "result_backend_transport_options": {"visibility_timeout": 36000},
        "task_time_limit": 14400,
        "task_soft_time_limit": 14340,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_track_started": True,
        "worker_concurrency": 4,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "beat_scheduler": "dataforge_scheduler.DatabaseScheduler",
        "beat_max_loop_interval": 60,
        "dataforge_task_max_retries": 3,
        "dataforge_task_retry_delay": 60,
        "dataforge_task_retry_backoff": True,
    }


def test_celery_config_holds_only_celery_keys_and_ours() -> None:
    config = Settings().celery_config()
    unknown = [k for k in config if k not in CELERY_DEFAULTS and not k.startswith("dataforge_")]
    assert unknown == []


@pytest.mark.parametrize(
    ("timeout", "soft"), [(14400, 14340), (600, 540), (100, 90), (5, 4), (1, None)]
)
def test_soft_time_limit_is_a_little_under_the_hard_limit(timeout: int, soft: int | None) -> None:
    settings = Settings(
        celery_task_default_timeout=timeout, celery_broker_visibility_timeout=2 * timeout + 1
    )
    config = settings.celery_config()
    assert config["task_time_limit"] == timeout
    assert config.get("task_soft_time_limit") == soft


@pytest.mark.parametrize("backend", ["db+postgresql://u@h/db", "rpc://", "cache+memory://"])
def test_backend_transport_options_only_for_redis(backend: str) -> None:
    config = Settings(celery_result_backend=backend).celery_config()
    assert "result_backend_transport_options" not in config
    assert config["broker_transport_options"] == {"visibility_timeout": 36000}


def test_effective_redis_url_falls_back_to_the_broker() -> None:
    assert Settings().effective_redis_url == "redis://localhost:6379/0"
    failover = Settings(celery_broker_url="redis://a:1/0; redis://b:1/0")
    assert failover.effective_redis_url == "redis://a:1/0"
    assert Settings(redis_url="memory://").effective_redis_url == "memory://"


# ---------------------------------------------------------------- secrets


def _secretive() -> Settings:
    return Settings(
        celery_broker_url="redis://:brokerpw@r:6379/0",
        celery_result_backend="redis://user:backendpw@r:6379/1",
        database_url="postgresql+psycopg://app:dbpw@db/app",
        redis_url="rediss://r:6380/0?password=querypw",
        api_keys=["fullkey1", "fullkey2"],
        api_read_only_keys=["readkey"],
    )


SECRETS = ("brokerpw", "backendpw", "dbpw", "querypw", "fullkey1", "fullkey2", "readkey")


def test_repr_and_str_hide_secrets() -> None:
    settings = _secretive()
    for text in (repr(settings), str(settings)):
        for secret in SECRETS:
            assert secret not in text
        assert "postgresql+psycopg://app:***@db/app" in text


def test_redacted_masks_secrets_and_is_json_ready() -> None:
    redacted = _secretive().redacted()
    text = json.dumps(redacted)
    for secret in SECRETS:
        assert secret not in text
    assert redacted["api_keys"] == ["***", "***"]
    assert redacted["celery_broker_url"] == "redis://:***@r:6379/0"
    assert redacted["redis_url"] == "rediss://r:6380/0?password=***"
    assert redacted["celery_timezone"] == "UTC"
    assert set(redacted) == set(Settings.model_fields)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://u:p@h/0", "redis://u:***@h/0"),
        ("redis://u:p@ss@h/0", "redis://u:***@h/0"),
        ("amqp://a:1@x//;amqp://b:2@y//", "amqp://a:***@x//;amqp://b:***@y//"),
        ("no scheme u:p@h", "no scheme u:p@h"),
        ("redis://h/0?db=1&token=t", "redis://h/0?db=1&token=***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# ---------------------------------------------------------------- documentation


def test_every_field_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []


def test_table_lists_every_field_once_per_line() -> None:
    table = settings_table_markdown()
    lines = table.splitlines()
    assert lines[0] == "| setting | env var | default | description |"
    assert len(lines) == 2 + len(Settings.model_fields)
    for name in Settings.model_fields:
        row = next(line for line in lines if line.startswith(f"| `{name}` |"))
        assert f"`DATAFORGE_{name.upper()}`" in row
    assert "| `celery_timezone` | `DATAFORGE_CELERY_TIMEZONE` | `UTC` |" in table
    assert "| `redis_url` | `DATAFORGE_REDIS_URL` | `None` |" in table
