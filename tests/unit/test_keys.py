"""Redis key layout (redis/keys.py) and the TTL rounding rule the lock ports share."""

from __future__ import annotations

import pickle

import pytest
import redis.exceptions

from dataforge_scheduler.core.ports import ttl_milliseconds
from dataforge_scheduler.errors import BackendUnavailable, ConfigurationError
from dataforge_scheduler.redis.connection import backend_errors
from dataforge_scheduler.redis.keys import (
    Keys,
    schedule_id_of_scope,
    schedule_scope,
    task_name_scope,
)


def test_key_layout_matches_the_operator_table() -> None:
    keys = Keys("dataforge")

    assert keys.prefix == "dataforge"
    assert keys.lock(schedule_scope(12)) == "dataforge:lock:task:12"
    assert keys.lock(task_name_scope("dataforge.sync")) == "dataforge:lock:name:dataforge.sync"
    assert keys.lock_pattern() == "dataforge:lock:*"
    assert keys.log("c-99") == "dataforge:log:c-99"
    assert keys.log_channel("c-99") == "dataforge:log:c-99:live"
    assert keys.log_end("c-99") == "dataforge:log:c-99:end"
    assert keys.run("c-99") == "dataforge:run:c-99"
    assert keys.outbox() == "dataforge:outbox"
    assert keys.outbox_dead() == "dataforge:outbox:dead"
    assert keys.schedule_changes_channel() == "dataforge:schedules:changed"
    assert keys.all_pattern() == "dataforge:*"
    assert keys.namespace("demo") == "dataforge:demo:"


def test_a_schedule_scope_reads_back_its_schedule_id() -> None:
    assert schedule_id_of_scope(schedule_scope(12)) == 12
    assert schedule_id_of_scope(task_name_scope("task:12")) is None
    assert schedule_id_of_scope("task:") is None
    assert schedule_id_of_scope("task:1x") is None
    assert schedule_id_of_scope("task:\u0663") is None  # a non-ASCII digit


def test_every_name_is_documented_in_the_module_docstring() -> None:
    import dataforge_scheduler.redis.keys as module

    doc = module.__doc__ or ""
    for name in (
        "<prefix>:lock:<scope>",
        "<prefix>:log:<run>",
        "<prefix>:log:<run>:end",
        "<prefix>:log:<run>:live",
        "<prefix>:run:<run>",
        "<prefix>:outbox",
        "<prefix>:outbox:dead",
        "<prefix>:schedules:changed",
    ):
        assert f"``{name}``" in doc, name


def test_a_prefix_may_contain_colons() -> None:
    assert Keys("app:prod").lock("task:1") == "app:prod:lock:task:1"


def test_scope_of_inverts_lock() -> None:
    keys = Keys("p")

    assert keys.scope_of(keys.lock("name:a:b")) == "name:a:b"
    with pytest.raises(ConfigurationError):
        keys.scope_of("p:log:1")
    with pytest.raises(ConfigurationError):
        keys.scope_of("p:lock:")


@pytest.mark.parametrize("prefix", ["", "a*", "a?", "a[b]", "a\\b", "has space", "tab\t"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Keys(prefix)

    assert caught.value.field == "key_prefix"
    assert "key_prefix" in str(caught.value)


def test_a_non_str_prefix_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Keys(None)  # type: ignore[arg-type]


def test_empty_scope_and_bad_run_ids_are_refused() -> None:
    keys = Keys("p")

    with pytest.raises(ConfigurationError, match="scope"):
        keys.lock("")
    for bad in (7, "", "a b", None):
        with pytest.raises(ConfigurationError, match="run id") as caught:
            keys.log(bad)  # type: ignore[arg-type]
        assert caught.value.field == "run_id"
    with pytest.raises(ConfigurationError, match="run id"):
        keys.run("")
    with pytest.raises(ConfigurationError, match="namespace"):
        keys.namespace("a:b")


@pytest.mark.parametrize(
    ("seconds", "millis"),
    [(30, 30_000), (0.05, 50), (0.0001, 1), (1.0001, 1001), (2.5, 2500)],
)
def test_ttl_rounds_up_to_whole_milliseconds(seconds: float, millis: int) -> None:
    assert ttl_milliseconds(seconds) == millis


@pytest.mark.parametrize("seconds", [0, -0.5, float("nan"), float("inf"), True, "3"])
def test_bad_ttls_are_refused(seconds: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        ttl_milliseconds(seconds)  # type: ignore[arg-type]


def test_backend_errors_wraps_connection_and_timeout_errors() -> None:
    for error in (redis.exceptions.ConnectionError("down"), redis.exceptions.TimeoutError("slow")):
        with (
            pytest.raises(BackendUnavailable, match="while testing") as caught,
            backend_errors("testing"),
        ):
            raise error
        assert caught.value.__cause__ is error
        assert isinstance(pickle.loads(pickle.dumps(caught.value)), BackendUnavailable)


def test_backend_errors_lets_other_errors_through() -> None:
    with pytest.raises(redis.exceptions.ResponseError), backend_errors("testing"):
        raise redis.exceptions.ResponseError("WRONGTYPE")
