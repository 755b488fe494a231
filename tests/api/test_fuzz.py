"""Property-based fuzzing of every operation in the app's own ``/openapi.json``.

Hypothesis draws an operation, then its path id, query parameters, body and credentials:
mostly from the document's JSON schemas (``schema_strategies``), sometimes from plain
arbitrary JSON and text, so both valid and invalid input reach the app. Requests go to
a real uvicorn on a loopback port. Properties: no 5xx but the documented 503, every
status code is one the document declares for that operation, and every JSON body
validates against the schema declared for that status.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.api.helpers import KEY, PREFIX, READ_KEY, add_schedule, future
from tests.api.schema_strategies import JSON, from_schema
from tests.api.servers import host_app, serve
from tests.runs import finish, manual

from dataforge_scheduler.api import ApiApp
from dataforge_scheduler.core.enums import ExecutionStatus
from dataforge_scheduler.runtime import Runtime

# a moderate run in CI; DATAFORGE_FUZZ_EXAMPLES=3000 for a deeper one by hand
EXAMPLES = int(os.environ.get("DATAFORGE_FUZZ_EXAMPLES", "500"))


def _inline(schema: Any, components: dict[str, Any]) -> Any:
    """``schema`` with every ``#/components/schemas/...`` ref replaced by its target."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            target = components[schema["$ref"].rsplit("/", 1)[-1]]
            return _inline(target, components)
        return {key: _inline(value, components) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, components) for item in schema]
    return schema


def _as_query(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def requests(doc: dict[str, Any], ids: dict[str, list[int]]) -> st.SearchStrategy[dict[str, Any]]:
    """Requests to the operations of ``doc`` (a closure: the strategy's repr stays short)."""

    @st.composite
    def draw_request(draw: st.DrawFn) -> dict[str, Any]:
        return _draw_request(draw, doc, ids)

    return draw_request()


def _draw_request(
    draw: st.DrawFn, doc: dict[str, Any], ids: dict[str, list[int]]
) -> dict[str, Any]:
    components = doc["components"]["schemas"]
    path, method = draw(
        st.sampled_from(sorted((p, m) for p, item in doc["paths"].items() for m in item))
    )
    operation = doc["paths"][path][method]
    known = ids["sse"] if path.endswith("/logs") else ids["any"]
    id_value = draw(
        st.sampled_from(known).map(str)
        | st.integers(1, 2**63 - 1).map(str)
        | st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%."),
            min_size=1,
        )
    )
    url = path.replace("{id}", id_value)
    params: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "query" or not draw(st.booleans()):
            continue
        schema = _inline(parameter["schema"], components)
        value = draw(from_schema(schema) | st.text(max_size=10))
        text = _as_query(value)
        if text is not None:
            params[parameter["name"]] = text
    body: Any = None
    if "requestBody" in operation:
        schema = _inline(
            operation["requestBody"]["content"]["application/json"]["schema"], components
        )
        body = draw(from_schema(schema) | JSON | st.just(None))
    credentials = draw(st.sampled_from(["key", "key", "key", "read", "none", "bearer", "query"]))
    return {
        "path": path,
        "method": method.upper(),
        "url": url,
        "params": params,
        "body": body,
        "credentials": credentials,
    }


def _auth(kind: str) -> tuple[dict[str, str], dict[str, str]]:
    if kind == "key":
        return {"X-API-Key": KEY}, {}
    if kind == "read":
        return {"X-API-Key": READ_KEY}, {}
    if kind == "bearer":
        return {"Authorization": f"Bearer {KEY}"}, {}
    if kind == "query":
        return {}, {"api_key": KEY}
    return {}, {}


def _check(doc: dict[str, Any], request: dict[str, Any], response: httpx.Response) -> None:
    operation = doc["paths"][request["path"]][request["method"].lower()]
    status = str(response.status_code)
    assert response.status_code < 500 or response.status_code == 503, (request, response.text)
    declared = operation["responses"]
    if response.status_code == 405:  # a method the path lacks: answered by the router
        return
    assert status in declared, (request, status, response.text)
    content = declared[status].get("content", {})
    if "application/json" in content:
        schema = {"$ref": content["application/json"]["schema"]["$ref"], **doc}
        jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
    elif "text/event-stream" in content and response.status_code == 200:
        assert response.headers["content-type"].startswith("text/event-stream")


@pytest.fixture
def fuzz_target(app: ApiApp, runtime: Runtime) -> Iterator[tuple[str, dict[str, list[int]]]]:
    schedules = [
        add_schedule(runtime, "f-interval").id,
        add_schedule(runtime, "f-report", task_name="dftest.report", handler_kwargs={"days": 1}).id,
        add_schedule(runtime, "f-date", task_type="date", interval_seconds=None,
                     run_at=future(days=3)).id,
        add_schedule(runtime, "f-system", task_name="dftest.cleanup", is_system=True).id,
    ]  # fmt: skip
    with runtime.session() as session:
        execution = manual(
            session,
            scheduled_task_id=schedules[0],
            task_name="dftest.sync_accounts",
            celery_task_id=str(uuid.uuid4()),
            kwargs={},
            now=datetime.now(UTC),
        )
        finish(
            session,
            celery_task_id=execution.celery_task_id,
            status=ExecutionStatus.SUCCESS,
            now=datetime.now(UTC),
            log_output="fuzzed",
        )
    with serve(host_app("starlette", app)) as url:
        yield f"{url}{PREFIX}", {"any": [*schedules, execution.id], "sse": [execution.id]}


def test_no_input_makes_a_5xx_or_breaks_the_schema(
    fuzz_target: tuple[str, dict[str, list[int]]], app: ApiApp
) -> None:
    base, ids = fuzz_target
    doc = app.openapi(PREFIX)
    statuses: Counter[int] = Counter()
    operations: Counter[str] = Counter()

    with httpx.Client(base_url=base, timeout=15) as client:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=requests(doc, ids))
        def fuzz(request: dict[str, Any]) -> None:
            headers, params = _auth(request["credentials"])
            kwargs: dict[str, Any] = {"params": {**request["params"], **params}}
            if request["body"] is not None:
                kwargs["json"] = request["body"]
            with client.stream(request["method"], request["url"], headers=headers, **kwargs) as r:
                if not r.headers.get("content-type", "").startswith("text/event-stream"):
                    r.read()  # a live stream is left unread: its status and headers suffice
                statuses[r.status_code] += 1
                operations[f"{request['method']} {request['path']}"] += 1
                _check(doc, request, r)

        fuzz()

    total = sum(statuses.values())
    print(f"\nfuzz: {total} generated requests; statuses {dict(sorted(statuses.items()))}")
    documented = sum(len(item) for item in doc["paths"].values())
    print(f"fuzz: operations covered {len(operations)} of {documented}")
    assert total >= EXAMPLES
    assert len(operations) == documented
    assert {200, 401, 422} <= set(statuses)
