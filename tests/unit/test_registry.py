"""Unit tests for the task registry and the params validator behind it."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from hypothesis import given, settings
from hypothesis import strategies as st

from dataforge_scheduler.core.enums import OverlapPolicy
from dataforge_scheduler.errors import InvalidParams, RegistryError, UnknownTask
from dataforge_scheduler.registry import (
    MISSING,
    REGISTERED_TASKS,
    ParamSpec,
    RegisteredTasksView,
    TaskInfo,
    TaskRegistry,
    register_task,
    registry,
)

SEED: dict[str, dict[str, Any]] = {
    "dataforge.sync_accounts": {
        "name": "账号同步",
        "description": "刷新过期的登录会话",
        "category": "sync",
        "params": [],
    },
    "dataforge.cleanup_logs": {
        "name": "日志清理",
        "description": "删除过期的执行日志",
        "category": "maintenance",
        "params": [{"name": "days", "type": "int", "required": True, "label": "保留天数"}],
    },
}


def fake_task(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name)


@pytest.fixture
def reg() -> TaskRegistry:
    return TaskRegistry()


@pytest.fixture
def default_registry() -> Iterator[TaskRegistry]:
    """The default registry, without prefix, restored after the test."""
    before, prefix = set(registry.names()), registry.task_name_prefix
    registry.configure(task_name_prefix="")
    yield registry
    for task_name in set(registry.names()) - before:
        registry.unregister(task_name)
    registry.configure(task_name_prefix=prefix)


def typed(reg: TaskRegistry, type_: str, **spec: Any) -> str:
    reg.register("t.typed", name="typed", params=[{"name": "v", "type": type_, **spec}])
    return "t.typed"


def invalid(reg: TaskRegistry, task_name: str, kwargs: Any, **kw: Any) -> InvalidParams:
    with pytest.raises(InvalidParams) as info:
        reg.validate_kwargs(task_name, kwargs, **kw)
    return info.value


# ------------------------------------------------------------------ seed shape


def test_decorator_produces_the_seed_dict_exactly(reg: TaskRegistry) -> None:
    register_task(
        name="账号同步", description="刷新过期的登录会话", category="sync", params=[], registry=reg
    )(fake_task("dataforge.sync_accounts"))
    register_task(
        name="日志清理",
        description="删除过期的执行日志",
        category="maintenance",
        params=[{"name": "days", "type": "int", "required": True, "label": "保留天数"}],
        registry=reg,
    )(fake_task("dataforge.cleanup_logs"))

    assert reg.as_seed_dict() == SEED
    assert json.dumps(reg.as_seed_dict(), ensure_ascii=False).count("保留天数") == 1
    params = reg.as_seed_dict()["dataforge.cleanup_logs"]["params"]
    assert list(params[0]) == ["name", "type", "required", "label"]


def test_param_spec_objects_give_only_the_four_seed_keys(reg: TaskRegistry) -> None:
    spec = ParamSpec("days", "int", label="天数", default=7, description="d", choices=(7, 30))
    info = reg.register("t.x", name="X", params=[spec])
    assert info.to_seed_dict()["params"] == [
        {"name": "days", "type": "int", "required": False, "label": "天数"}
    ]
    assert info.to_dict()["params"][0] == {
        "name": "days",
        "type": "int",
        "required": False,
        "label": "天数",
        "description": "d",
        "default": 7,
        "choices": [7, 30],
    }
    assert spec.has_default
    assert not ParamSpec("n", "int").has_default
    assert ParamSpec("n", "int").default is MISSING


def test_import_seed_round_trips(reg: TaskRegistry) -> None:
    reg.import_seed(SEED)
    assert reg.as_seed_dict() == SEED
    assert reg.get("dataforge.cleanup_logs").params == (
        ParamSpec("days", "int", required=True, label="保留天数"),
    )
    other = TaskRegistry()
    other.import_seed(reg.as_seed_dict())
    assert other.as_seed_dict() == SEED


def test_import_seed_is_all_or_nothing(reg: TaskRegistry) -> None:
    bad = {**SEED, "dataforge.bad": {"name": "坏", "params": [{"name": "x", "type": "integer"}]}}
    with pytest.raises(RegistryError, match=r"dataforge\.bad"):
        reg.import_seed(bad)
    assert len(reg) == 0


@pytest.mark.parametrize(
    "entry",
    [
        {"description": "no name"},
        {"name": "X", "colour": "red"},
        {"name": "X", "params": {"name": "days", "type": "int"}},
    ],
)
def test_import_seed_rejects_malformed_entries(reg: TaskRegistry, entry: Any) -> None:
    with pytest.raises(RegistryError, match=r"t\.x"):
        reg.import_seed({"t.x": entry})


# ------------------------------------------------------------------ default registry view


def test_registered_tasks_is_a_live_read_only_view(default_registry: TaskRegistry) -> None:
    assert isinstance(REGISTERED_TASKS, Mapping)
    assert isinstance(REGISTERED_TASKS, RegisteredTasksView)
    assert not isinstance(REGISTERED_TASKS, dict)
    assert "dataforge.sync_accounts" not in REGISTERED_TASKS

    task = fake_task("dataforge.sync_accounts")
    returned = register_task(
        name="账号同步", description="刷新过期的登录会话", category="sync", params=[]
    )(task)
    assert returned is task
    assert "dataforge.sync_accounts" in default_registry
    assert REGISTERED_TASKS["dataforge.sync_accounts"] == SEED["dataforge.sync_accounts"]
    assert {k: REGISTERED_TASKS[k] for k in REGISTERED_TASKS} == default_registry.as_seed_dict()
    assert len(REGISTERED_TASKS) == len(default_registry)

    REGISTERED_TASKS["dataforge.sync_accounts"]["name"] = "changed"
    assert REGISTERED_TASKS["dataforge.sync_accounts"]["name"] == "账号同步"

    view: Any = REGISTERED_TASKS
    with pytest.raises(TypeError, match="read-only"):
        view["dataforge.other"] = {"name": "x"}
    with pytest.raises(TypeError, match="read-only"):
        del view["dataforge.sync_accounts"]
    for method in ("pop", "popitem", "clear", "update", "setdefault"):
        with pytest.raises(TypeError, match="read-only"):
            getattr(view, method)("dataforge.sync_accounts")
    assert "dataforge.sync_accounts" in REGISTERED_TASKS

    default_registry.unregister("dataforge.sync_accounts")
    assert "dataforge.sync_accounts" not in REGISTERED_TASKS
    with pytest.raises(KeyError):
        REGISTERED_TASKS["dataforge.sync_accounts"]


def test_registered_tasks_equals_the_seed_dict(default_registry: TaskRegistry) -> None:
    before = default_registry.as_seed_dict()
    default_registry.import_seed(SEED)
    assert {**before, **SEED} == REGISTERED_TASKS


# ------------------------------------------------------------------ real Celery


def test_decorator_stacks_on_a_real_celery_task_and_returns_it_unchanged(
    reg: TaskRegistry,
) -> None:
    app = Celery("t")

    @app.task(name="dataforge.plain")
    def plain(x: int) -> int:
        return x * 2

    before = plain

    @register_task(name="账号同步", category="sync", registry=reg)
    @app.task(name="dataforge.sync_accounts", bind=True)
    def sync_accounts(
        self: Any, scheduled_task_id: int | None = None, **kwargs: Any
    ) -> dict[str, int]:
        return {"synced_count": 10}

    assert register_task(name="Plain", registry=reg)(plain) is before
    assert reg.names() == ["dataforge.plain", "dataforge.sync_accounts"]
    # the pending task was not built early: configuration applied afterwards still counts
    assert not getattr(app, "configured")  # noqa: B009 - not in the celery-types stubs
    app.conf.task_acks_late = True
    assert sync_accounts.name == "dataforge.sync_accounts"
    assert sync_accounts.acks_late is True
    assert sync_accounts.run(None) == {"synced_count": 10}
    assert app.tasks["dataforge.sync_accounts"] is sync_accounts._get_current_object()


def test_decorator_reads_the_name_of_an_evaluated_celery_task(reg: TaskRegistry) -> None:
    app = Celery("t")
    app.finalize()

    @register_task(name="Ready", registry=reg)
    @app.task(name="dataforge.ready")
    def ready() -> None:
        return None

    assert reg.get("dataforge.ready").name == "Ready"
    assert app.tasks["dataforge.ready"] is ready


def test_decorators_in_the_wrong_order_explain_the_order(reg: TaskRegistry) -> None:
    app = Celery("t")
    with pytest.raises(
        RegistryError, match=r"put @register_task\(\.\.\.\) above @celery_app"
    ) as info:

        @app.task(name="dataforge.wrong")
        @register_task(name="Wrong", registry=reg)
        def wrong() -> None:
            return None

    assert "wrong" in str(info.value)
    assert len(reg) == 0


@pytest.mark.parametrize("task", [SimpleNamespace(name=3), SimpleNamespace(name=""), object()])
def test_decorator_rejects_objects_without_a_str_name(reg: TaskRegistry, task: object) -> None:
    with pytest.raises(RegistryError, match="no Celery task name"):
        register_task(name="X", registry=reg)(task)


# ------------------------------------------------------------------ naming rules


def test_reregistering_identical_details_is_a_no_op(reg: TaskRegistry) -> None:
    params = [{"name": "days", "type": "int", "default": 7, "choices": [7, 30]}]
    first = reg.register("t.a", name="A", category="c", params=params)
    again = reg.register("t.a", name="A", category="c", params=params)
    assert again is first
    assert len(reg) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"name": "B"},
        {"category": "other"},
        {"description": "new"},
        {"is_system": True},
        {"params": [{"name": "days", "type": "int"}]},
    ],
)
def test_registering_a_taken_name_with_other_details_fails(
    reg: TaskRegistry, change: dict[str, Any]
) -> None:
    reg.register("t.a", name="A", category="c")
    with pytest.raises(RegistryError, match=r"'t\.a' is already registered") as info:
        reg.register("t.a", **{"name": "A", "category": "c", **change})
    assert info.value.field == "task_name"
    assert reg.get("t.a").name == "A"


def test_prefix_is_enforced_at_register() -> None:
    reg = TaskRegistry(task_name_prefix="dataforge.")
    reg.register("dataforge.sync", name="Sync")
    with pytest.raises(
        RegistryError, match=r"task name 'sync' must start with task_name_prefix 'dataforge\.'"
    ) as info:
        reg.register("sync", name="Sync")
    assert info.value.task_name_prefix == "dataforge."
    assert reg.names() == ["dataforge.sync"]


def test_configure_checks_earlier_registrations_and_later_ones(reg: TaskRegistry) -> None:
    reg.register("dataforge.ok", name="OK")
    reg.register("sync", name="Sync")
    reg.register("other.task", name="Other")
    with pytest.raises(RegistryError, match=r"'other\.task', 'sync'") as info:
        reg.configure(task_name_prefix="dataforge.")
    assert info.value.offenders == ["other.task", "sync"]
    assert reg.task_name_prefix == ""

    reg.unregister("sync")
    reg.unregister("other.task")
    reg.configure(task_name_prefix="dataforge.")
    assert reg.task_name_prefix == "dataforge."
    with pytest.raises(RegistryError, match="must start with task_name_prefix"):
        reg.register("late", name="Late")
    reg.configure(task_name_prefix="")
    reg.register("late", name="Late")
    assert "late" in reg


def test_unknown_task_suggests_close_names(reg: TaskRegistry) -> None:
    reg.import_seed(SEED)
    with pytest.raises(UnknownTask, match=r"did you mean 'dataforge\.sync_accounts'") as info:
        reg.get("dataforge.sync_acount")
    assert info.value.suggestions == ["dataforge.sync_accounts"]
    assert isinstance(info.value, LookupError)
    with pytest.raises(UnknownTask) as unprefixed:
        reg.get("cleanup_logs")
    assert unprefixed.value.suggestions == ["dataforge.cleanup_logs"]
    with pytest.raises(UnknownTask) as nothing:
        reg.validate_kwargs("zzz", {})
    assert nothing.value.suggestions == []
    assert "did you mean" not in str(nothing.value)
    with pytest.raises(UnknownTask, match="nope"):
        reg.unregister("nope")


def test_listing(reg: TaskRegistry) -> None:
    reg.import_seed(SEED)
    reg.register("dataforge.a", name="A", category="sync")
    assert reg.names() == ["dataforge.a", "dataforge.cleanup_logs", "dataforge.sync_accounts"]
    assert list(reg) == reg.names()
    assert len(reg) == 3
    assert "dataforge.a" in reg
    assert 42 not in reg
    assert reg.categories() == ["maintenance", "sync"]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "days", "type": "integer"}, "'days'.*unknown type 'integer'.*int, float, str"),
        ({"name": "2days", "type": "int"}, "'2days'.*Python identifier"),
        ({"name": "class", "type": "int"}, "'class'.*Python identifier"),
        ({"name": "scheduled_task_id", "type": "int"}, "reserved"),
        ({"name": "days", "type": "int", "default": "many"}, "default 'many' does not fit"),
        ({"name": "days", "type": "int", "default": True}, "default True does not fit"),
        ({"name": "days", "type": "int", "required": True, "default": 1}, "cannot have a default"),
        ({"name": "days", "type": "int", "required": "yes"}, "required must be a bool"),
        ({"name": "days", "type": "int", "choices": [1, "x"]}, "choice 'x' does not fit"),
        ({"name": "days", "type": "int", "choices": [1], "default": 2}, "one of 1"),
        ({"name": "tags", "type": "list", "choices": [[1]]}, "not supported for type 'list'"),
        ({"name": "days", "type": "int", "min": 1}, r"unknown keys \['min'\]"),
        ({"name": "days"}, "'type' key is missing"),
    ],
)
def test_bad_param_specs_are_rejected_at_registration(
    reg: TaskRegistry, spec: dict[str, Any], match: str
) -> None:
    with pytest.raises(RegistryError, match=f"task 't.x': param .*{match}"):
        reg.register("t.x", name="X", params=[spec])
    assert "t.x" not in reg


def test_duplicate_param_names_are_rejected(reg: TaskRegistry) -> None:
    params = [{"name": "days", "type": "int"}, {"name": "days", "type": "str"}]
    with pytest.raises(RegistryError, match="param 'days' is declared twice"):
        reg.register("t.x", name="X", params=params)


@pytest.mark.parametrize("field", ["name", "category"])
def test_empty_display_fields_are_rejected(reg: TaskRegistry, field: str) -> None:
    with pytest.raises(RegistryError, match=f"{field} must be a non-empty str"):
        reg.register("t.x", **{"name": "X", field: " "})


def test_param_spec_is_value_like() -> None:
    spec = ParamSpec("when", "datetime", default="2024-01-01T08:00:00+08:00")
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert ParamSpec("m", "str", choices=["a", "b"]).choices == ("a", "b")
    info = TaskInfo("t.x", "X", "", "general", (spec,))
    assert pickle.loads(pickle.dumps(info)) == info


# ------------------------------------------------------------------ validate_kwargs


@pytest.mark.parametrize(
    ("type_", "given", "expected"),
    [
        ("int", 5, 5),
        ("int", "5", 5),
        ("int", " -5 ", -5),
        ("int", 5.0, 5),
        ("float", 1, 1.0),
        ("float", "2.5", 2.5),
        ("float", "1e3", 1000.0),
        ("str", "文本", "文本"),
        ("bool", True, True),
        ("bool", "false", False),
        ("bool", "yes", True),
        ("bool", 0, False),
        ("datetime", "2024-05-01T08:00:00+08:00", "2024-05-01T00:00:00+00:00"),
        ("datetime", "2024-05-01T00:00:00Z", "2024-05-01T00:00:00+00:00"),
        ("datetime", datetime(2024, 5, 1, tzinfo=UTC), "2024-05-01T00:00:00+00:00"),
        ("list", [1, "a", None, {"b": [2.5]}], [1, "a", None, {"b": [2.5]}]),
        ("list", (1, 2), [1, 2]),
        ("dict", {"a": {"b": [1, True]}}, {"a": {"b": [1, True]}}),
    ],
)
def test_each_type_accepts_and_coerces(
    reg: TaskRegistry, type_: str, given: Any, expected: Any
) -> None:
    result = reg.validate_kwargs(typed(reg, type_), {"v": given})
    assert result == {"v": expected}
    assert type(result["v"]) is type(expected)
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(
    ("type_", "given", "error_type", "msg"),
    [
        ("int", 5.5, "int_from_float", "fractional part"),
        ("int", "5.5", "int_parsing", "valid integer"),
        ("int", True, "int_type", "not a boolean"),
        ("int", "many", "int_parsing", "valid integer"),
        ("float", False, "float_type", "not a boolean"),
        ("float", "nan", "finite_number", "finite"),
        ("float", float("inf"), "finite_number", "finite"),
        ("str", 5, "string_type", "valid string"),
        ("bool", "maybe", "bool_parsing", "valid boolean"),
        ("bool", 2, "bool_parsing", "valid boolean"),
        ("datetime", "2024-05-01T08:00:00", "timezone_aware", "timezone-aware"),
        ("datetime", datetime(2024, 5, 1), "timezone_aware", "naive"),  # noqa: DTZ001
        ("datetime", "2024-05-01", "timezone_aware", "timezone-aware"),
        ("datetime", "yesterday", "datetime_parsing", "ISO-8601"),
        ("datetime", 1714521600, "datetime_type", "ISO-8601"),
        ("list", "a,b", "list_type", "valid list"),
        ("dict", [1], "dict_type", "valid dictionary"),
    ],
)
def test_each_type_rejects_bad_values(
    reg: TaskRegistry, type_: str, given: Any, error_type: str, msg: str
) -> None:
    error = invalid(reg, typed(reg, type_), {"v": given})
    assert error.errors == [
        {"loc": ["handler_kwargs", "v"], "msg": error.errors[0]["msg"], "type": error_type}
    ]
    assert msg in error.errors[0]["msg"]
    assert f"v: {error.errors[0]['msg']} (got {given!r})" in str(error)
    assert error.field == "handler_kwargs"
    assert error.task_name == "t.typed"


def test_nested_errors_point_into_the_value(reg: TaskRegistry) -> None:
    error = invalid(reg, typed(reg, "list"), {"v": [1, object()]})
    assert error.errors[0]["loc"] == ["handler_kwargs", "v", 1]
    assert "v.1:" in str(error)
    other = TaskRegistry()
    error = invalid(other, typed(other, "dict"), {"v": {1: "x"}})
    assert error.errors[0]["loc"][:2] == ["handler_kwargs", "v"]


def test_choices_are_checked_after_coercion(reg: TaskRegistry) -> None:
    task_name = typed(reg, "int", choices=[7, 30])
    assert reg.validate_kwargs(task_name, {"v": "30"}) == {"v": 30}
    error = invalid(reg, task_name, {"v": 8})
    assert error.errors[0]["type"] == "choice"
    assert "one of 7, 30" in str(error)


def test_every_bad_param_is_named_in_one_error(reg: TaskRegistry) -> None:
    reg.register(
        "t.report",
        name="报表",
        params=[
            {"name": "days", "type": "int", "required": True, "label": "天数"},
            {"name": "since", "type": "datetime", "required": True},
            {"name": "dry_run", "type": "bool"},
        ],
    )
    error = invalid(reg, "t.report", {"since": "2024-01-01", "dry_run": "perhaps", "colour": 1})
    assert [e["loc"] for e in error.errors] == [
        ["handler_kwargs", "days"],
        ["handler_kwargs", "since"],
        ["handler_kwargs", "dry_run"],
        ["handler_kwargs", "colour"],
    ]
    assert all(set(e) == {"loc", "msg", "type"} for e in error.errors)
    assert [e["type"] for e in error.errors] == [
        "missing",
        "timezone_aware",
        "bool_parsing",
        "extra_forbidden",
    ]
    message = str(error)
    assert message.startswith("invalid handler_kwargs for task 't.report': ")
    for part in ("days: required param is missing", "since:", "dry_run:", "colour: unknown param"):
        assert part in message
    assert "accepts: days, since, dry_run" in message
    assert pickle.loads(pickle.dumps(error)).errors == error.errors


def test_defaults_are_filled_json_safe_and_fresh(reg: TaskRegistry) -> None:
    reg.register(
        "t.defaults",
        name="D",
        params=[
            {"name": "days", "type": "int", "default": "7"},
            {"name": "since", "type": "datetime", "default": "2024-01-01T08:00:00+08:00"},
            {"name": "tags", "type": "list", "default": ["a"]},
            {"name": "note", "type": "str"},
        ],
    )
    result = reg.validate_kwargs("t.defaults", {})
    assert result == {"days": 7, "since": "2024-01-01T00:00:00+00:00", "tags": ["a"]}
    result["tags"].append("b")
    assert reg.validate_kwargs("t.defaults", None)["tags"] == ["a"]
    assert reg.validate_kwargs("t.defaults", {"days": 1})["days"] == 1


def test_null_means_not_given_for_optional_params(reg: TaskRegistry) -> None:
    reg.register(
        "t.nulls",
        name="N",
        params=[
            {"name": "days", "type": "int", "default": 7},
            {"name": "note", "type": "str"},
            {"name": "since", "type": "datetime", "required": True},
        ],
    )
    since = "2024-01-01T00:00:00+00:00"
    assert reg.validate_kwargs("t.nulls", {"days": None, "note": None, "since": since}) == {
        "since": since,
        "days": 7,
    }
    error = invalid(reg, "t.nulls", {"since": None})
    assert error.errors[0]["msg"] == "required param cannot be null"


def test_unknown_keys_are_rejected_even_without_params(reg: TaskRegistry) -> None:
    reg.register("t.bare", name="Bare")
    assert reg.validate_kwargs("t.bare", {}) == {}
    error = invalid(reg, "t.bare", {"days": 3})
    assert error.errors == [
        {
            "loc": ["handler_kwargs", "days"],
            "msg": "unknown param; task 't.bare' accepts: no params",
            "type": "extra_forbidden",
        }
    ]


def test_scheduled_task_id_is_always_passed_through_untouched(reg: TaskRegistry) -> None:
    reg.register("t.bare", name="Bare")
    typed(reg, "int", required=True)
    assert reg.validate_kwargs("t.bare", {"scheduled_task_id": 12}) == {"scheduled_task_id": 12}
    marker = object()
    result = reg.validate_kwargs("t.typed", {"v": "3", "scheduled_task_id": marker})
    assert result == {"v": 3, "scheduled_task_id": marker}
    assert result["scheduled_task_id"] is marker
    assert reg.validate_kwargs("t.bare", {"scheduled_task_id": None}) == {"scheduled_task_id": None}


def test_partial_checks_only_the_given_keys(reg: TaskRegistry) -> None:
    reg.register(
        "t.partial",
        name="P",
        params=[
            {"name": "days", "type": "int", "required": True},
            {"name": "keep", "type": "bool", "default": True},
        ],
    )
    assert reg.validate_kwargs("t.partial", {}, partial=True) == {}
    assert reg.validate_kwargs("t.partial", {"keep": "no"}, partial=True) == {"keep": False}
    error = invalid(reg, "t.partial", {"days": "x", "extra": 1}, partial=True)
    assert [e["type"] for e in error.errors] == ["int_parsing", "extra_forbidden"]
    assert invalid(reg, "t.partial", {"days": None}, partial=True).errors[0]["loc"] == [
        "handler_kwargs",
        "days",
    ]
    assert invalid(reg, "t.partial", {}).errors[0]["type"] == "missing"


@pytest.mark.parametrize("kwargs", [[("days", 1)], "days=1", 5])
def test_kwargs_must_be_an_object(reg: TaskRegistry, kwargs: Any) -> None:
    reg.register("t.bare", name="Bare")
    error = invalid(reg, "t.bare", kwargs)
    assert error.errors == [
        {"loc": ["handler_kwargs"], "msg": "Input should be an object", "type": "dict_type"}
    ]


def test_param_names_that_shadow_pydantic_attributes_work(reg: TaskRegistry) -> None:
    params = [{"name": n, "type": "str"} for n in ("model_config", "schema", "dict", "copy")]
    reg.register("t.shadow", name="S", params=params)
    kwargs = {"model_config": "a", "schema": "b", "dict": "c", "copy": "d"}
    assert reg.validate_kwargs("t.shadow", kwargs) == kwargs


@settings(max_examples=200, deadline=None)
@given(value=st.integers(min_value=-(2**70), max_value=2**70))
def test_int_params_accept_ints_and_their_text(value: int) -> None:
    reg = TaskRegistry()
    task_name = typed(reg, "int")
    assert reg.validate_kwargs(task_name, {"v": value}) == {"v": value}
    assert reg.validate_kwargs(task_name, {"v": str(value)}) == {"v": value}


@settings(max_examples=200, deadline=None)
@given(
    instant=st.datetimes(
        min_value=datetime(1900, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2200, 1, 1),  # noqa: DTZ001
        timezones=st.builds(
            timezone,
            st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timedelta(minutes=m)),
        ),
    )
)
def test_datetime_params_keep_the_instant_in_utc(instant: datetime) -> None:
    reg = TaskRegistry()
    task_name = typed(reg, "datetime")
    out = reg.validate_kwargs(task_name, {"v": instant.isoformat()})["v"]
    parsed = datetime.fromisoformat(out)
    assert parsed == instant
    assert parsed.utcoffset() == timedelta(0)


def test_a_task_may_register_the_default_overlap_policy_of_its_schedules() -> None:
    registry = TaskRegistry()
    info = registry.register("x.exclusive", name="Exclusive", overlap_policy="buffer_one")
    assert info.overlap_policy is OverlapPolicy.BUFFER_ONE
    assert info.to_dict()["overlap_policy"] == "buffer_one"
    assert "overlap_policy" not in info.to_seed_dict()  # the seed's shape is kept
    assert registry.register("x.plain", name="Plain").overlap_policy is None


def test_an_unknown_default_overlap_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(RegistryError, match="buffer_one, cancel_other") as info:
        TaskRegistry().register("x.bad", name="Bad", overlap_policy="queue_all")
    assert info.value.field == "overlap_policy"
