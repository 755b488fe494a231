"""The OpenAPI 3.1 document, generated from the route table and its pydantic models.

Every route and method is listed with its parameters (path, query, headers), body,
success response and error responses; schemas come from ``models_json_schema`` with
refs into ``#/components/schemas``. The three ways to send a key are security schemes
(``X-API-Key`` header, HTTP bearer, ``api_key`` query parameter); public operations
(``/health``, ``/openapi.json``) declare none. ``servers`` is the mount point of the
request, so the document is right wherever the app is mounted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dataforge_scheduler.api.routing import Access, Operation, Router
from dataforge_scheduler.api.schemas.common import ErrorResponse

__all__ = ["build_openapi"]

REF = "#/components/schemas/{model}"
_SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerKey": {"type": "http", "scheme": "bearer", "description": "an API key as token"},
    "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
}
_ANY_KEY: list[dict[str, list[str]]] = [
    {"ApiKeyHeader": []},
    {"BearerKey": []},
    {"ApiKeyQuery": []},
]
_REASONS = {
    400: "Bad request",
    401: "Missing or invalid API key",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the row's current state",
    413: "Request body too large",
    415: "The body is not application/json",
    422: "Validation error",
    429: "Too many live-log streams held by this caller",
    503: "A backend (database, Redis, broker) is unavailable, or too many streams",
}

Mode = Literal["validation", "serialization"]


def _models(router: Router) -> list[tuple[type[BaseModel], Mode]]:
    found: dict[tuple[type[BaseModel], Mode], None] = {(ErrorResponse, "serialization"): None}
    for route in router.routes():
        for op in route.operations.values():
            wanted: list[tuple[type[BaseModel] | None, Mode]] = [
                (op.body_model, "validation"),
                (op.query_model, "validation"),
                (op.response_model, "serialization"),
            ]
            wanted += [(model, "serialization") for _, model in op.other_responses]
            for model, mode in wanted:
                if model is not None:
                    found[(model, mode)] = None
    return list(found)


def _error_codes(op: Operation, *, has_path_params: bool) -> list[int]:
    codes = set(op.errors)
    if op.access != Access.PUBLIC:
        codes.add(401)
    if op.access == Access.WRITE:
        codes.add(403)
    if has_path_params:
        codes.update((404, 422))
    if op.query_model is not None:
        codes.add(422)
    if op.body_model is not None:
        codes.update((400, 413, 415, 422))
    codes.add(503)
    return sorted(codes)


def _success(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    if op.status == 204:
        return {"description": "Done; no content"}
    if op.media_type == "text/event-stream":
        return {
            "description": "Server-Sent Events: `event: log` lines, then one `event: end`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    content: dict[str, Any] = {}
    if op.response_model is not None:
        content = {"application/json": {"schema": refs[(op.response_model, "serialization")]}}
    return {"description": op.summary, "content": content}


def _query_parameters(model: type[BaseModel], defs: dict[str, Any], refs: Any) -> list[Any]:
    ref = refs[(model, "validation")]["$ref"]
    schema = defs[ref.rsplit("/", 1)[-1]]
    return [
        {"name": name, "in": "query", "required": False, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _operation(
    op: Operation, params: tuple[str, ...], defs: dict[str, Any], refs: dict[Any, Any]
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "operationId": op.handler.__name__,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        item["description"] = op.description
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        }
        for name in params
    ]
    if op.query_model is not None:
        parameters += _query_parameters(op.query_model, defs, refs)
    if op.media_type == "text/event-stream":
        parameters.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
            }
        )
    if parameters:
        item["parameters"] = parameters
    if op.body_model is not None:
        item["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[(op.body_model, "validation")]}},
        }
    responses: dict[str, Any] = {str(op.status): _success(op, refs)}
    for code, model in op.other_responses:
        content = {"application/json": {"schema": refs[(model, "serialization")]}}
        responses[str(code)] = {"description": _REASONS[code], "content": content}
    error_schema = {"application/json": {"schema": refs[(ErrorResponse, "serialization")]}}
    for code in _error_codes(op, has_path_params=bool(params)):
        if str(code) not in responses:
            responses[str(code)] = {"description": _REASONS[code], "content": error_schema}
    item["responses"] = responses
    item["security"] = [] if op.access == Access.PUBLIC else _ANY_KEY
    return item


def build_openapi(
    router: Router, *, title: str, version: str, root_path: str = ""
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``router``'s routes, served under ``root_path``."""
    refs, schema = models_json_schema(_models(router), ref_template=REF)
    defs: dict[str, Any] = schema.get("$defs", {})
    paths: dict[str, Any] = {}
    for route in sorted(router.routes(), key=lambda r: r.template):
        paths[route.template] = {
            method.lower(): _operation(op, route.params, defs, refs)
            for method, op in sorted(route.operations.items())
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "servers": [{"url": root_path or "/"}],
        "paths": paths,
        "components": {"schemas": defs, "securitySchemes": _SECURITY_SCHEMES},
        "security": _ANY_KEY,
    }
