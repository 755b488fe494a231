"""Routes compiled once: path templates to regexes, literal segments before parameters,
and 404 versus 405 answered right.

A path belongs to the first route (in rank order) whose template matches it; the method
is then looked up on that route alone, so ``POST /tasks/locks`` is a 405 (``Allow:
GET``) and never reaches ``/tasks/{id}``. Rank: fewer parameter segments first, so
``/tasks/registered`` and ``/tasks/locks`` win over ``/tasks/{id}`` whatever the order of
registration. ``{id}`` segments must be positive integers, else 422 at ``["path", "id"]``
(as FastAPI answers for an ``int`` path parameter).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from dataforge_scheduler.api.errors import HTTPError, error_item, validation_failed

if TYPE_CHECKING:
    from dataforge_scheduler.api.context import Context
    from dataforge_scheduler.api.http import Response

__all__ = ["Access", "Operation", "Route", "Router", "convert"]

Handler = Callable[["Context"], Awaitable["Response"]]

_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}\Z")


class Access:
    """Who may call an operation."""

    PUBLIC = "public"  # no credentials (health, the OpenAPI document)
    READ = "read"  # any valid key, read-only keys included
    WRITE = "write"  # full-access keys only; recorded in the audit trail


@dataclass(frozen=True)
class Operation:
    """One method on one route, with what the OpenAPI document says about it."""

    method: str
    handler: Handler
    summary: str
    tag: str
    access: str = Access.READ
    status: int = 200
    response_model: type[BaseModel] | None = None
    media_type: str = "application/json"
    body_model: type[BaseModel] | None = None
    body_required: bool = True
    query_model: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    #: other answers with their own body model, e.g. ``/health``'s 503
    other_responses: tuple[tuple[int, type[BaseModel]], ...] = ()
    description: str = ""


@dataclass
class Route:
    """One path template and its operations by method."""

    template: str
    regex: re.Pattern[str] = field(init=False)
    params: tuple[str, ...] = field(init=False)
    operations: dict[str, Operation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = tuple(_PARAM.findall(self.template))
        # re.escape turns "{name}" into "\{name\}"; swap those for named groups
        pattern = re.sub(r"\\\{([a-z_][a-z0-9_]*)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        self.regex = re.compile(f"^{pattern}$")

    @property
    def rank(self) -> tuple[int, int]:
        return (len(self.params), -len(self.template))

    def allow(self) -> str:
        return ", ".join(sorted(self.operations))


class Router:
    """The route table; ``match`` answers (operation, path params) or raises 404/405/422."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._ranked: list[Route] = []

    def add(self, template: str, operation: Operation) -> None:
        route = self._routes.setdefault(template, Route(template))
        if operation.method in route.operations:
            raise ValueError(f"{operation.method} {template} is registered twice")
        route.operations[operation.method] = operation
        self._ranked = sorted(self._routes.values(), key=lambda r: r.rank)

    def routes(self) -> list[Route]:
        """Every route, in rank order."""
        return list(self._ranked)

    def match(self, path: str, method: str) -> tuple[Operation, dict[str, str]]:
        """The operation and the raw path parameters (convert them with ``convert``)."""
        for route in self._ranked:
            found = route.regex.match(path)
            if found is None:
                continue
            operation = route.operations.get(method)
            if operation is None:
                raise HTTPError(405, "Method Not Allowed", headers=[("allow", route.allow())])
            return operation, found.groupdict()
        raise HTTPError(404, "Not Found")


def convert(raw: dict[str, str]) -> dict[str, Any]:
    """Path parameters as positive integers (every parameter of this API is an id)."""
    params: dict[str, Any] = {}
    for name, value in raw.items():
        # ASCII digits only, at most 19 (int64): "²" is a digit to str.isdigit, and a
        # 5,000-digit id must never reach int()
        if not _ID.match(value) or not 0 < int(value) <= _MAX_ID:
            raise validation_failed(
                [
                    error_item(
                        ["path", name],
                        f"{name} must be a positive whole number, got {value!r}",
                        "int_parsing",
                    )
                ]
            )
        params[name] = int(value)
    return params
