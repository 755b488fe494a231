"""Task parameter specs and the pydantic validator built from them.

A task's params (``ParamSpec``) describe its ``handler_kwargs`` for a front end and for
validation. ``ParamsValidator`` turns one task's specs into a pydantic model (built once
with ``create_model``, ``extra="forbid"``) and checks kwargs against it. Kwargs may come
from JSON, a query string or the command line, so validation is pydantic's lax mode with
three tightenings: a boolean is never a number, ``float`` refuses NaN and infinities, and
``datetime`` accepts only timezone-aware ISO-8601 text (or an aware ``datetime``) — never
a Unix timestamp, never a naive value. The result is JSON-safe, because handler kwargs
are stored as JSON and sent to Celery as JSON: datetimes come back as UTC ISO-8601
strings, lists and dicts hold JSON values only.

Coercions accepted, per type: ``int`` takes ints, integral floats (``5.0``) and integer
strings (``"5"``, ``" 5 "``, ``"1_000"``), never ``5.5`` nor ``True``; ``float`` takes
ints, floats and numeric strings; ``bool`` takes booleans, ``0``/``1`` and the usual words
(``"true"``, ``"off"``, ``"yes"``...); ``str`` takes text only (no number is turned into
text); ``list`` takes any sequence of JSON values; ``dict`` takes a mapping of string keys
to JSON values. ``None`` for a param that is not required means "not given".
"""

from __future__ import annotations

import copy
import keyword
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from dataforge_scheduler.core.timing import aware_utc
from dataforge_scheduler.errors import InvalidParams, InvalidSchedule, RegistryError

__all__ = [
    "MISSING",
    "PARAM_TYPES",
    "RESERVED_PARAM_NAMES",
    "ParamSpec",
    "ParamsValidator",
]

PARAM_TYPES: Final = ("int", "float", "str", "bool", "datetime", "list", "dict")
#: Injected by the library into every scheduled run, so no task may declare it.
RESERVED_PARAM_NAMES: Final = frozenset({"scheduled_task_id"})
_SPEC_KEYS: Final = ("name", "type", "required", "label", "default", "description", "choices")
_UNCHOOSABLE: Final = frozenset({"list", "dict"})


class _Missing:
    """The type of ``MISSING``: a param with no default."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def _not_a_bool(kind: str, label: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        # pydantic's lax mode reads True as 1; a flag passed where a count belongs is a bug
        if isinstance(value, bool):
            raise PydanticCustomError(
                f"{kind}_type", f"Input should be a valid {label}, not a boolean"
            )
        return value

    return BeforeValidator(check)


def _aware_utc_iso(value: Any) -> str:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PydanticCustomError(
                "datetime_parsing",
                "Input should be an ISO-8601 datetime with a UTC offset, "
                "e.g. 2024-05-01T08:00:00+08:00",
            ) from None
    else:
        raise PydanticCustomError(
            "datetime_type", "Input should be an ISO-8601 datetime string with a UTC offset"
        )
    try:
        aware = aware_utc(parsed)  # the library's one naive-datetime rule
    except InvalidSchedule:
        raise PydanticCustomError(
            "timezone_aware",
            "Input should be timezone-aware: a naive datetime has no UTC offset "
            "(add one, e.g. +08:00 or Z)",
        ) from None
    return aware.isoformat()


_ANNOTATIONS: Final[dict[str, Any]] = {
    "int": Annotated[int, _not_a_bool("int", "integer")],
    "float": Annotated[float, AllowInfNan(False), _not_a_bool("float", "number")],
    "str": str,
    "bool": bool,
    "datetime": Annotated[str, PlainValidator(_aware_utc_iso)],
    "list": list[JsonValue],
    "dict": dict[str, JsonValue],
}


def _one_of(choices: tuple[Any, ...]) -> AfterValidator:
    expected = ", ".join(repr(choice) for choice in choices)

    def check(value: Any) -> Any:
        if value not in choices:
            raise PydanticCustomError(
                "choice", "Input should be one of {expected}", {"expected": expected}
            )
        return value

    return AfterValidator(check)


def _spec_error(param: object, reason: str) -> RegistryError:
    return RegistryError(f"param {param!r}: {reason}", field="params", param=param)


def _coerce_static(name: str, annotation: Any, value: Any, *, what: str) -> Any:
    """``value`` validated against ``annotation`` and dumped JSON-safe, or a RegistryError."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        return adapter.dump_python(adapter.validate_python(value), mode="json")
    except ValidationError as exc:
        reason = "; ".join(error["msg"] for error in exc.errors(include_url=False))
        raise _spec_error(name, f"{what} {value!r} does not fit its type: {reason}") from None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a task, as a front end shows it and validation checks it.

    ``type`` is one of ``PARAM_TYPES``; ``default`` is ``MISSING`` when there is none;
    ``choices`` (not for ``list``/``dict``) limits the accepted values. The spec checks
    itself on construction and raises ``RegistryError`` naming the param.
    """

    name: str
    type: str
    required: bool = False
    label: str = ""
    default: Any = MISSING
    description: str = ""
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        choices: object = self.choices  # a seed dict or JSON hands over a list
        if isinstance(choices, list):
            object.__setattr__(self, "choices", tuple(choices))
        self._check_fields()
        annotation = _ANNOTATIONS[self.type]
        json_choices: tuple[Any, ...] | None = None
        if self.choices is not None:
            json_choices = tuple(
                _coerce_static(self.name, annotation, choice, what="choice")
                for choice in self.choices
            )
            annotation = Annotated[annotation, _one_of(json_choices)]
        json_default: Any = MISSING
        if self.default is not MISSING:
            json_default = _coerce_static(self.name, annotation, self.default, what="default")
        # not dataclass fields: equality and repr stay about what the author wrote
        object.__setattr__(self, "_annotation", annotation)
        object.__setattr__(self, "_json_choices", json_choices)
        object.__setattr__(self, "_json_default", json_default)

    def __reduce__(self) -> tuple[Any, ...]:
        # the derived validator parts hold closures; rebuild them from the fields instead
        fields = (self.name, self.type, self.required, self.label, self.default)
        return (type(self), (*fields, self.description, self.choices))

    def _check_fields(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise _spec_error(name, "a param name must be a Python identifier (it is a kwarg)")
        if name in RESERVED_PARAM_NAMES:
            raise _spec_error(name, "this name is reserved: the library passes it to every run")
        if self.type not in PARAM_TYPES:
            allowed = ", ".join(PARAM_TYPES)
            raise _spec_error(name, f"unknown type {self.type!r}; allowed types: {allowed}")
        if not isinstance(self.required, bool):
            raise _spec_error(name, f"required must be a bool, got {self.required!r}")
        for attr in ("label", "description"):
            if not isinstance(getattr(self, attr), str):
                raise _spec_error(name, f"{attr} must be a str, got {getattr(self, attr)!r}")
        if self.required and self.default is not MISSING:
            raise _spec_error(name, "a required param cannot have a default; drop one of them")
        if self.choices is not None:
            if not isinstance(self.choices, tuple) or not self.choices:
                raise _spec_error(name, f"choices must be a non-empty list, got {self.choices!r}")
            if self.type in _UNCHOOSABLE:
                raise _spec_error(name, f"choices are not supported for type {self.type!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ParamSpec:
        """A spec from a seed-style dict (``{"name", "type", "required", "label"}`` and the
        optional ``default``, ``description``, ``choices``)."""
        if not isinstance(data, Mapping):
            raise _spec_error(data, "a param must be a ParamSpec or a mapping")
        unknown = sorted(str(key) for key in data if key not in _SPEC_KEYS)
        if unknown:
            raise _spec_error(
                data.get("name"), f"unknown keys {unknown}; allowed: {', '.join(_SPEC_KEYS)}"
            )
        for key in ("name", "type"):
            if key not in data:
                raise _spec_error(data.get("name"), f"the {key!r} key is missing")
        return cls(**{str(key): value for key, value in data.items()})

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    @property
    def json_default(self) -> Any:
        """The default as validation fills it in (JSON-safe), or ``MISSING``."""
        return copy.deepcopy(self.__dict__["_json_default"])

    def to_seed_dict(self) -> dict[str, Any]:
        """The seed's shape: exactly ``name``, ``type``, ``required``, ``label``."""
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "label": self.label,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything a front end may show, JSON-safe; ``default`` only when there is one."""
        data = {**self.to_seed_dict(), "description": self.description}
        if self.has_default:
            data["default"] = self.json_default
        json_choices = self.__dict__["_json_choices"]
        data["choices"] = list(json_choices) if json_choices is not None else None
        return data


class ParamsValidator:
    """Validates one task's ``handler_kwargs`` against its params (models built once)."""

    def __init__(self, task_name: str, params: tuple[ParamSpec, ...]) -> None:
        self.task_name = task_name
        self.params = params
        self._required = frozenset(spec.name for spec in params if spec.required)
        self._full_model = self._build_model(partial=False)

    @cached_property
    def _partial_model(self) -> type[BaseModel]:
        return self._build_model(partial=True)

    def _build_model(self, *, partial: bool) -> type[BaseModel]:
        # Fields get neutral names and the param name as alias, so a param called
        # ``model_config`` or ``schema`` cannot clash with BaseModel's own attributes.
        fields: dict[str, Any] = {}
        for index, spec in enumerate(self.params):
            annotation = spec.__dict__["_annotation"]
            if spec.required and not partial:
                fields[f"p{index}"] = (annotation, Field(alias=spec.name))
            else:
                fields[f"p{index}"] = (annotation, Field(default=None, alias=spec.name))
        config = ConfigDict(extra="forbid")
        model: type[BaseModel] = create_model(
            f"Params[{self.task_name}]", __config__=config, **fields
        )
        return model

    def validate(
        self, kwargs: Mapping[str, Any] | None, *, partial: bool = False
    ) -> dict[str, Any]:
        """Coerced, JSON-safe kwargs with defaults filled in (not when ``partial``).

        ``partial`` checks only the keys given: missing required params are no error.
        ``scheduled_task_id`` is passed through untouched. Raises ``InvalidParams``.
        """
        given: object = {} if kwargs is None else kwargs  # from JSON: any value
        if not isinstance(given, Mapping):
            error = {
                "loc": ["handler_kwargs"],
                "msg": "Input should be an object",
                "type": "dict_type",
            }
            raise InvalidParams(
                f"handler_kwargs for task {self.task_name!r} must be an object (a dict), "
                f"got {type(given).__name__}",
                field="handler_kwargs",
                task_name=self.task_name,
                errors=[error],
            )
        passthrough = {k: v for k, v in given.items() if k in RESERVED_PARAM_NAMES}
        data = {
            key: value
            for key, value in given.items()
            if key not in RESERVED_PARAM_NAMES and not (value is None and key not in self._required)
        }
        model = self._partial_model if partial else self._full_model
        try:
            validated = model.model_validate(data)
        except ValidationError as exc:
            raise self._invalid(exc) from None
        result = validated.model_dump(mode="json", by_alias=True, exclude_unset=True)
        if not partial:
            for spec in self.params:
                if spec.has_default and spec.name not in result:
                    result[spec.name] = spec.json_default
        result.update(passthrough)
        return result

    def _invalid(self, exc: ValidationError) -> InvalidParams:
        accepted = ", ".join(spec.name for spec in self.params) or "no params"
        errors: list[dict[str, Any]] = []
        parts: list[str] = []
        for raw in exc.errors(include_url=False):
            loc = [str(part) if not isinstance(part, int) else part for part in raw["loc"]]
            msg, kind = raw["msg"], raw["type"]
            if kind == "missing":
                msg = "required param is missing"
            elif kind == "extra_forbidden":
                msg = f"unknown param; task {self.task_name!r} accepts: {accepted}"
            elif raw["input"] is None and loc and loc[0] in self._required:
                msg = "required param cannot be null"
            errors.append({"loc": ["handler_kwargs", *loc], "msg": msg, "type": kind})
            where = ".".join(str(part) for part in loc)
            got = "" if kind == "missing" else f" (got {_short_repr(raw['input'])})"
            parts.append(f"{where}: {msg}{got}")
        return InvalidParams(
            f"invalid handler_kwargs for task {self.task_name!r}: {'; '.join(parts)}",
            field="handler_kwargs",
            task_name=self.task_name,
            errors=errors,
        )


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
