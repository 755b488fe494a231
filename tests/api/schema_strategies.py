"""Hypothesis strategies from the JSON Schema subset pydantic emits (for the fuzz test).

Covers what the API's OpenAPI document uses: ``anyOf``/``oneOf``, ``enum``, ``const``,
``type`` (one or a list), objects (``properties``, ``required``,
``additionalProperties``), arrays (``items``), numeric bounds, string lengths and the
``date-time`` format. Refs must be inlined first. Anything else is arbitrary JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

__all__ = ["JSON", "from_schema"]

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# hypothesis takes naive bounds; ``timezones=`` makes every value aware
_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=_OFFSETS | st.just(UTC),
).map(lambda d: d.isoformat())


def from_schema(schema: Any) -> st.SearchStrategy[Any]:
    """Values valid for ``schema`` (a dict with refs inlined)."""
    if not isinstance(schema, dict) or not schema:
        return JSON
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(part) for part in schema[key]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": one}) for one in kind])
    builder = _BUILDERS.get(kind)
    return JSON if builder is None else builder(schema)


def _integer(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**63) - 1) + 1)
    high = schema.get("maximum", schema.get("exclusiveMaximum", 2**63 + 1) - 1)
    return st.integers(low, high)


def _number(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.floats(
        min_value=schema.get("minimum"), max_value=schema.get("maximum"), allow_nan=False,
        allow_infinity=False,
    )  # fmt: skip


def _string(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if schema.get("format") == "date-time":
        return _DATETIMES
    return st.text(
        min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 30), 30)
    )


def _array(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.lists(from_schema(schema.get("items", {})), max_size=3)


def _object(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or draw(st.booleans()):
                out[name] = draw(from_schema(sub))
        if extra is not False and draw(st.booleans()):
            values = JSON if extra is True else from_schema(extra)
            out.update(draw(st.dictionaries(st.text(max_size=8), values, max_size=3)))
        return out

    return build()


_BUILDERS = {
    "integer": _integer,
    "number": _number,
    "string": _string,
    "boolean": lambda schema: st.booleans(),
    "null": lambda schema: st.none(),
    "array": _array,
    "object": _object,
}
