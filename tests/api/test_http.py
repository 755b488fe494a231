"""The HTTP layer: routing (404, 405 with Allow, mount points), bodies (malformed JSON,
415, 413 by Content-Length and while streaming), auth modes, the OpenAPI document,
health and schedule previews."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from tests.api.helpers import KEY, PREFIX, READ_KEY, add_schedule, future

from dataforge_scheduler.api import ApiApp, Principal, create_app
from dataforge_scheduler.api.auth import redact_query_string
from dataforge_scheduler.errors import ConfigurationError
from dataforge_scheduler.registry import TaskRegistry
from dataforge_scheduler.runtime import Runtime
from dataforge_scheduler.settings import Settings

pytestmark = pytest.mark.anyio


def _client(app: ApiApp, *, root: str = PREFIX, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root)
    return httpx.AsyncClient(
        transport=transport, base_url=f"http://testserver{root}", headers=headers
    )


# ---------------------------------------------------------------- routing


async def test_unknown_path_is_404_and_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/nope")
    wrong = await client.delete("/tasks")
    run_get = await client.get("/tasks/1/run")

    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, POST"
    assert run_get.status_code == 405
    assert run_get.headers["allow"] == "POST"


async def test_paths_are_relative_to_any_mount_point(app: ApiApp, runtime: Runtime) -> None:
    add_schedule(runtime)
    async with _client(app, root="/somewhere/else", **{"X-API-Key": KEY}) as elsewhere:
        mounted = await elsewhere.get("/tasks")
        doc = (await elsewhere.get("/openapi.json")).json()
    async with _client(app, root="", **{"X-API-Key": KEY}) as bare:
        at_root = await bare.get("/tasks")

    assert mounted.status_code == at_root.status_code == 200
    assert len(mounted.json()["items"]) == 1
    assert doc["servers"] == [{"url": "/somewhere/else"}]


# ---------------------------------------------------------------- bodies


async def test_malformed_json_is_422_with_a_message(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    broken = await client.post("/tasks", content=b'{"name": ', headers=headers)
    nan = await client.post("/tasks", content=b'{"name": NaN}', headers=headers)
    not_utf8 = await client.post("/tasks", content=b'{"name": "\xff"}', headers=headers)
    array = await client.post("/tasks", json=[1, 2])
    nul = await client.post("/tasks", json={"name": "a\x00b"})

    for response in (broken, nan, not_utf8, array, nul):
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][0] == "body"
    assert broken.json()["detail"][0]["type"] == "json_invalid"


async def test_non_json_body_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/tasks", content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415


async def test_body_over_the_limit_is_413_by_length_and_while_streaming(
    runtime: Runtime,
) -> None:
    app = create_app(runtime, max_body_bytes=100)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 50

    async with _client(app, **{"X-API-Key": KEY}) as client:
        declared = await client.post("/tasks", json={"description": "x" * 200})
        streamed = await client.post(
            "/tasks", content=chunks(), headers={"content-type": "application/json"}
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert "100 bytes" in streamed.json()["detail"]


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"X-API-Key": KEY}, {}),
        ({"Authorization": f"Bearer {KEY}"}, {}),
        ({}, {"api_key": KEY}),
    ],
)
async def test_a_key_is_accepted_three_ways(
    app: ApiApp, headers: dict[str, str], params: dict[str, str]
) -> None:
    async with _client(app, **headers) as client:
        response = await client.get("/tasks", params=params)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "ключ"}],
)
async def test_missing_or_wrong_key_is_401(app: ApiApp, headers: dict[str, str]) -> None:
    async with _client(app, **{k: v for k, v in headers.items() if v.isascii()}) as client:
        response = await client.get("/tasks", headers=_latin1(headers))
        query = await client.get("/tasks", params={"api_key": "wrong"}) if not headers else None
    assert response.status_code == 401
    assert "www-authenticate" in response.headers
    assert query is None or query.status_code == 401


def _latin1(headers: dict[str, str]) -> dict[str, Any]:
    return {k: v.encode("utf-8") for k, v in headers.items() if not v.isascii()}


async def test_read_only_key_may_read_but_not_write(app: ApiApp, runtime: Runtime) -> None:
    row = add_schedule(runtime)
    async with _client(app, **{"X-API-Key": READ_KEY}) as client:
        read = await client.get(f"/tasks/{row.id}")
        write = await client.post(f"/tasks/{row.id}/pause")
    assert read.status_code == 200
    assert write.status_code == 403
    assert "read-only" in write.json()["detail"]


async def test_health_and_openapi_need_no_key(app: ApiApp) -> None:
    async with _client(app) as client:
        health = await client.get("/health")
        doc = await client.get("/openapi.json")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "database": "ok",
        "redis": "ok",
        "outbox": {"waiting": 0, "oldest_age_seconds": None, "warning": None},
    }
    assert doc.status_code == 200


async def test_a_host_hook_authenticates_sync_or_async(runtime: Runtime) -> None:
    seen: list[str] = []

    def sync_hook(scope: Any) -> Principal | None:
        user = dict(scope["headers"]).get(b"x-user")
        return Principal(name=f"user:{user.decode()}") if user else None

    async def async_hook(scope: Any) -> str | None:
        seen.append(scope["path"])
        return "sso:alice" if dict(scope["headers"]).get(b"x-sso") else None

    for hook, header in ((sync_hook, {"X-User": "bob"}), (async_hook, {"X-SSO": "1"})):
        app = create_app(runtime, api_keys=[], read_only_keys=[], authenticate=hook)
        async with _client(app) as client:
            allowed = await client.post("/tasks/999/pause", headers=header)
            denied = await client.get("/tasks")
        assert allowed.status_code == 404  # authenticated, then the row is missing
        assert denied.status_code == 401
    assert seen == [f"{PREFIX}/tasks/999/pause", f"{PREFIX}/tasks"]


async def test_no_way_to_authenticate_refuses_to_build(runtime: Runtime) -> None:
    with pytest.raises(ConfigurationError, match="allow_anonymous"):
        create_app(runtime, api_keys=[], read_only_keys=[])
    anonymous = create_app(runtime, api_keys=[], read_only_keys=[], allow_anonymous=True)
    async with _client(anonymous) as client:
        assert (await client.get("/tasks")).status_code == 200


async def test_keys_are_named_by_the_operator_or_by_position_never_by_a_hash(
    runtime: Runtime,
) -> None:
    named = create_app(runtime, api_keys={"ci-bot": KEY}, read_only_keys={"grafana": READ_KEY})
    listed = create_app(runtime, api_keys=["a" * 16, KEY], read_only_keys=[READ_KEY])
    async with _client(named) as client:
        await client.post("/tasks/999/pause", headers={"X-API-Key": KEY})
        who = (await client.get("/audit", headers={"X-API-Key": READ_KEY})).status_code
    assert who == 200
    async with _client(listed) as client:
        created = await client.post(
            "/tasks",
            json={"name": "n", "task_type": "manual", "task_name": "dftest.sync_accounts"},
            headers={"X-API-Key": KEY},
        )
        audit = (await client.get("/audit", headers={"X-API-Key": READ_KEY})).json()
    assert created.status_code == 201, created.text
    assert [entry["principal"] for entry in audit["items"]] == ["key:2"]
    async with _client(named) as client:
        await client.delete(f"/tasks/{created.json()['id']}", headers={"X-API-Key": KEY})
        audit = (await client.get("/audit", headers={"X-API-Key": READ_KEY})).json()
    assert audit["items"][0]["principal"] == "key:ci-bot"


async def test_keys_named_in_the_settings_name_the_audit_principal(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFORGE_API_KEYS", json.dumps({"deploy-bot": KEY}))
    monkeypatch.setenv("DATAFORGE_API_READ_ONLY_KEYS", json.dumps({"grafana": READ_KEY}))
    settings = Settings.from_env(database_url=runtime.settings.database_url)
    monkeypatch.setattr(runtime, "settings", settings)
    app = create_app(runtime)
    async with _client(app) as client:
        created = await client.post(
            "/tasks",
            json={"name": "n", "task_type": "manual", "task_name": "dftest.sync_accounts"},
            headers={"X-API-Key": KEY},
        )
        refused = await client.delete(
            f"/tasks/{created.json()['id']}", headers={"X-API-Key": READ_KEY}
        )
        audit = (await client.get("/audit", headers={"X-API-Key": READ_KEY})).json()
    assert created.status_code == 201, created.text
    assert refused.status_code == 403
    assert [entry["principal"] for entry in audit["items"]] == ["key:deploy-bot"]


async def test_a_bad_key_name_is_refused(runtime: Runtime) -> None:
    with pytest.raises(ConfigurationError, match="key name 'ci bot' is invalid") as info:
        create_app(runtime, api_keys={"ci bot": KEY})
    assert info.value.field == "api_keys"


async def test_a_short_key_is_refused_without_quoting_it(runtime: Runtime) -> None:
    with pytest.raises(ConfigurationError, match="at least 16") as info:
        create_app(runtime, api_keys=["short-key"])
    assert "short-key" not in str(info.value)
    assert info.value.field == "api_keys"
    with pytest.raises(ConfigurationError, match="key:tiny"):
        create_app(runtime, api_keys=[KEY], read_only_keys={"tiny": "x"})
    assert create_app(runtime, api_keys=["short-key"], min_key_length=8) is not None


async def test_anonymous_callers_only_read_unless_writes_are_given(runtime: Runtime) -> None:
    read_only = create_app(runtime, api_keys=[KEY], allow_anonymous=True)
    writing = create_app(runtime, api_keys=[], allow_anonymous=True, anonymous_writes=True)
    async with _client(read_only) as client:
        assert (await client.get("/tasks")).status_code == 200
        refused = await client.post("/tasks/999/pause")
        keyed = await client.post("/tasks/999/pause", headers={"X-API-Key": KEY})
    async with _client(writing) as client:
        allowed = await client.post("/tasks/999/pause")
    assert refused.status_code == 403, refused.text
    assert keyed.status_code == 404  # a key still writes
    assert allowed.status_code == 404  # authorised, then the row is missing
    with pytest.raises(ConfigurationError, match="anonymous_writes"):
        create_app(runtime, api_keys=[KEY], anonymous_writes=True)


async def test_query_string_keys_are_masked_before_any_log(
    app: ApiApp, caplog: pytest.LogCaptureFixture
) -> None:
    scopes: list[dict[str, Any]] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        scopes.append(scope)

    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app=spy, root_path=PREFIX)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://t{PREFIX}") as client:
        response = await client.get("/tasks/999", params={"api_key": KEY, "x": "1"})
    assert response.status_code == 404
    assert scopes[0]["query_string"] == b"api_key=***&x=1"
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("dataforge_scheduler")]
    assert not any(KEY in message for message in ours)
    assert redact_query_string(b"a=1") == b"a=1"


async def test_a_percent_encoded_query_key_is_masked_too(
    app: ApiApp, caplog: pytest.LogCaptureFixture
) -> None:
    scopes: list[dict[str, Any]] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        scopes.append(scope)

    transport = httpx.ASGITransport(app=spy, root_path=PREFIX)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://t{PREFIX}") as client:
        response = await client.get(f"/tasks/999?api%5Fkey={KEY}&x=1")
    assert response.status_code == 404  # the encoded name still authenticates
    assert KEY.encode() not in scopes[0]["query_string"]
    for raw in (b"api%5Fkey=s3cret", b"%61pi_key=s3cret&b=2", b"API_KEY=x&api%5fkey=s3cret"):
        assert b"s3cret" not in redact_query_string(raw), raw
    assert redact_query_string(b"apikey=1&b=%20") == b"apikey=1&b=%20"  # left alone


async def test_health_names_no_host_and_logs_the_details(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        database_url="postgresql+psycopg://secretuser@127.0.0.1:1/internaldb",
        redis_url="redis://127.0.0.1:1/0",
        celery_broker_url="redis://127.0.0.1:1/0",
        api_keys=[KEY],
    )
    runtime = Runtime(settings, registry=TaskRegistry())
    try:
        async with _client(create_app(runtime)) as client:
            with caplog.at_level(logging.WARNING, logger="dataforge_scheduler"):
                response = await client.get("/health")
    finally:
        runtime.close()
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "database": "unreachable",
        "redis": "unreachable",
        "outbox": None,
    }
    assert "secretuser" not in response.text
    assert "127.0.0.1" not in response.text
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "127.0.0.1:1" in logged


# ---------------------------------------------------------------- OpenAPI, preview


async def test_openapi_lists_every_path_and_method(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()

    assert doc["openapi"] == "3.1.0"
    operations = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert len(operations) == 25
    assert ("/tasks/{id}", "patch") in operations
    assert ("/tasks/{id}/backfill", "post") in operations
    assert ("/tasks/{id}/backfill/cancel", "post") in operations
    assert ("/executions/{id}/cancel", "post") in operations
    assert ("/executions/{id}/rerun", "post") in operations
    assert ("/executions/{id}/logs", "get") in operations
    assert set(doc["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerKey", "ApiKeyQuery"}
    assert doc["paths"]["/health"]["get"]["security"] == []
    refs = json.dumps(doc).count("#/components/schemas/")
    assert refs > 20
    assert "TaskCreate" in doc["components"]["schemas"]


async def test_preview_returns_fire_times_in_the_timezone(client: httpx.AsyncClient) -> None:
    body = {"task_type": "cron", "cron_expression": "30 9 * * 1", "timezone": "Asia/Shanghai"}
    response = await client.post("/schedules/preview", json={**body, "count": 3})

    assert response.status_code == 200
    result = response.json()
    times = [datetime.fromisoformat(text) for text in result["fire_times"]]
    assert len(times) == 3
    assert result["timezone"] == "Asia/Shanghai"
    assert all(
        t.utcoffset() is not None and t.utcoffset().total_seconds() == 8 * 3600 for t in times
    )
    assert all((t.hour, t.minute, t.weekday()) == (9, 30, 0) for t in times)
    assert result["next_run_at"] == result["fire_times"][0]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"task_type": "cron", "cron_expression": "* * *"}, ["body", "cron_expression"]),
        ({"task_type": "interval"}, ["body", "interval_seconds"]),
        (
            {"task_type": "cron", "cron_expression": "0 * * * *", "timezone": "X/Y"},
            ["body", "timezone"],
        ),
        ({"task_type": "date", "run_at": "2001-01-01T00:00:00Z"}, ["body", "run_at"]),
        ({"task_type": "date", "run_at": "2040-01-01T00:00:00"}, ["body", "run_at"]),
        ({"task_type": "manual", "count": 0}, ["body", "count"]),
    ],
)
async def test_preview_refuses_what_create_would(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[str]
) -> None:
    response = await client.post("/schedules/preview", json=body)
    assert response.status_code == 422, response.text
    assert loc in [item["loc"] for item in response.json()["detail"]]


async def test_preview_of_a_date_and_a_manual_schedule(client: httpx.AsyncClient) -> None:
    run_at = future(days=2)
    date = (
        await client.post(
            "/schedules/preview", json={"task_type": "date", "run_at": run_at.isoformat()}
        )
    ).json()
    manual = (await client.post("/schedules/preview", json={"task_type": "manual"})).json()

    assert [datetime.fromisoformat(t) for t in date["fire_times"]] == [
        run_at.replace(microsecond=run_at.microsecond)
    ]
    assert manual == {"timezone": "UTC", "fire_times": [], "next_run_at": None, "excluded": []}


# ---------------------------------------------------------------- I/O off the event loop


async def test_a_slow_query_does_not_block_other_requests(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list waits (in its worker thread) until /health has answered: if database work
    ran on the event loop, /health could never answer and the list would time out."""
    import asyncio
    import threading

    from dataforge_scheduler.sql import store

    released = threading.Event()
    original = store.list_schedules

    def slow_list(*args: Any, **kwargs: Any) -> Any:
        if not released.wait(timeout=10):
            raise AssertionError("the event loop was blocked: /health never answered")
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "list_schedules", slow_list)
    listing = asyncio.ensure_future(client.get("/tasks"))
    health = await client.get("/health")
    released.set()

    assert health.status_code == 200
    assert (await listing).status_code == 200
    assert health.headers["x-request-id"]


# ---------------------------------------------------------------- health under load


async def test_a_flood_of_health_probes_makes_one_check_per_interval(
    runtime: Runtime,
) -> None:
    app = create_app(runtime)
    async with _client(app) as client:
        answers = await asyncio.gather(*(client.get("/health") for _ in range(60)))
        again = await client.get("/health")
    assert {answer.status_code for answer in answers} == {200}
    assert again.json() == answers[0].json()
    assert app.state.health.checks == 1  # the rest waited for it or read its answer


async def test_a_hanging_backend_answers_health_in_bounded_time_and_starves_nothing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that hangs (a backend that accepts and never answers): /health answers
    "timeout" after ``health_timeout_seconds``, one check at a time, and the other
    endpoints keep answering meanwhile on their own threads."""
    release = threading.Event()
    real_check = runtime.check

    def hanging() -> dict[str, str]:
        release.wait(timeout=30)
        return real_check()

    monkeypatch.setattr(runtime, "check", hanging)
    app = create_app(runtime, health_timeout_seconds=0.5)
    try:
        async with _client(app) as client:
            probes = await asyncio.gather(*(client.get("/health") for _ in range(40)))
            listing = await client.get("/tasks", headers={"X-API-Key": KEY})
    finally:
        release.set()
    assert {probe.status_code for probe in probes} == {503}
    assert probes[0].json()["database"] == "timeout"
    assert listing.status_code == 200
    assert app.state.health.checks == 1


async def test_a_failing_backend_is_logged_once_not_per_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        database_url="postgresql+psycopg://u@127.0.0.1:1/db",
        redis_url="redis://127.0.0.1:1/0",
        celery_broker_url="redis://127.0.0.1:1/0",
        api_keys=[KEY],
    )
    runtime = Runtime(settings, registry=TaskRegistry())
    app = create_app(runtime, health_cache_seconds=0)
    try:
        async with _client(app) as client:
            with caplog.at_level(logging.WARNING, logger="dataforge_scheduler"):
                for _ in range(5):
                    assert (await client.get("/health")).status_code == 503
    finally:
        runtime.close()
    assert app.state.health.checks == 5
    unreachable = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(unreachable) == 2, [r.getMessage() for r in unreachable]  # database, Redis


async def test_a_503_names_the_backend_and_nothing_of_its_address(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        database_url=pg_url,
        redis_url="redis://internal-redis.example:1/0",
        celery_broker_url="redis://internal-redis.example:1/0",
        api_keys=[KEY],
    )
    runtime = Runtime(settings, registry=TaskRegistry())
    try:
        async with _client(create_app(runtime), **{"X-API-Key": KEY}) as client:
            with caplog.at_level(logging.WARNING, logger="dataforge_scheduler"):
                locks = await client.get("/tasks/locks")
    finally:
        runtime.close()
    assert locks.status_code == 503, locks.text
    assert locks.json() == {"detail": "Redis is unavailable"}
    assert locks.headers["retry-after"] == "5"
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "internal-redis.example" in logged  # the detail is for the operator
