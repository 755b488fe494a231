"""The examples: the FastAPI service's own test suite, and its docker-compose file.

The service's tests (``examples/fastapi_app/tests``) run in a subprocess from the
service's directory, with its own pytest configuration, exactly as its README says:
once on the defaults (SQLite file, in-process stand-ins) and once on the real
PostgreSQL and Redis. Docker is not available in CI, so ``examples/docker-compose.yml``
is checked for structure: the seed's service names, the commands, the start-up order,
settings the library accepts, and a Dockerfile that copies what exists. PyYAML is not a
dependency; a small reader of the block-YAML subset the file uses parses it (and is
checked against PyYAML where it is installed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from dataforge_scheduler import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVICE = EXAMPLES / "fastapi_app"
COMPOSE = EXAMPLES / "docker-compose.yml"
APP_SERVICES = ("migrate", "celery_worker", "celery_beat", "api")


# ---------------------------------------------------------------- the service's tests


def _run_service_tests(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATAFORGE_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=SERVICE,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _assert_all_passed(done: subprocess.CompletedProcess[str]) -> None:
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert re.fullmatch(r"\d+ passed in [\d.]+s", summary), summary


@pytest.mark.slow
def test_the_service_tests_pass_on_the_defaults() -> None:
    _assert_all_passed(_run_service_tests())


@pytest.mark.slow
def test_the_service_tests_pass_on_postgres_and_redis(
    pg_url: str, pg_admin_url: str, redis_url: str
) -> None:
    del pg_url  # requested for its availability check (skip locally, fail in CI)
    _assert_all_passed(
        _run_service_tests(
            DATAFORGE_TEST_DATABASE_URL=pg_admin_url, DATAFORGE_TEST_REDIS_URL=redis_url
        )
    )


# ---------------------------------------------------------------- a block-YAML reader

_KEY = re.compile(r"^(?P<key>[^\s:#'\"][^:]*?|<<):(?:\s+(?P<rest>.*))?$")
_INT = re.compile(r"^-?\d+$")


class _Reader:
    """Block mappings, block sequences of scalars, flow sequences (JSON), quoted and
    plain scalars, ``&anchor``, ``*alias`` and ``<<`` merges: what the file uses."""

    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, int, str]] = []  # (line number, indent, content)
        for number, raw in enumerate(text.splitlines(), start=1):
            content = _strip_comment(raw).rstrip()
            if content.strip():
                self.lines.append((number, len(content) - len(content.lstrip(" ")), content))
        self.anchors: dict[str, Any] = {}

    def read(self) -> Any:
        value, end = self._block(0, self.lines[0][1])
        if end != len(self.lines):
            self._fail(end, "unexpected indentation")
        return value

    def _fail(self, index: int, why: str) -> NoReturn:
        number, _, content = self.lines[min(index, len(self.lines) - 1)]
        raise ValueError(f"line {number} ({content.strip()!r}): {why} (extend this reader)")

    def _block(self, index: int, indent: int) -> tuple[Any, int]:
        if self.lines[index][2].strip().startswith("- "):
            return self._sequence(index, indent)
        return self._mapping(index, indent)

    def _sequence(self, index: int, indent: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while index < len(self.lines) and self.lines[index][1] == indent:
            item = self.lines[index][2].strip()
            if not item.startswith("- "):
                self._fail(index, "a mapping key inside a sequence")
            if _KEY.match(item[2:].strip()):
                self._fail(index, "a mapping inside a sequence")
            items.append(self._scalar(item[2:].strip(), index))
            index += 1
        return items, index

    def _mapping(self, index: int, indent: int) -> tuple[dict[str, Any], int]:
        explicit: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        while index < len(self.lines) and self.lines[index][1] == indent:
            match = _KEY.match(self.lines[index][2].strip())
            if match is None:
                self._fail(index, "not a 'key: value' line")
            key, rest = match["key"], (match["rest"] or "").strip()
            anchor = None
            if rest.startswith("&"):
                anchor, _, rest = rest[1:].partition(" ")
                rest = rest.strip()
            index += 1
            if rest:
                value = self._scalar(rest, index - 1)
            elif index < len(self.lines) and self.lines[index][1] > indent:
                value, index = self._block(index, self.lines[index][1])
            else:
                value = None
            if anchor:
                self.anchors[anchor] = value
            if key == "<<":
                merged.update(value)
            elif key in explicit:
                self._fail(index - 1, f"duplicate key {key!r}")
            else:
                explicit[key] = value
        return {**merged, **explicit}, index

    def _scalar(self, text: str, index: int) -> Any:
        if text.startswith("*"):
            if text[1:] not in self.anchors:
                self._fail(index, f"unknown alias {text!r}")
            return self.anchors[text[1:]]
        if text.startswith("["):
            return json.loads(text)
        if text.startswith('"'):
            return json.loads(text)
        if text.startswith("'"):
            return text[1:-1].replace("''", "'")
        if text[0] in "{|>&!%@`":
            self._fail(index, f"unsupported YAML: {text[:20]!r}")
        if _INT.match(text):
            return int(text)
        return {"true": True, "false": False, "null": None, "~": None}.get(text, text)


def _strip_comment(line: str) -> str:
    quote = None
    for position, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (position == 0 or line[position - 1].isspace()):
            return line[:position]
    return line


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with VAR unset: the default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = _Reader(COMPOSE.read_text(encoding="utf-8")).read()
    assert isinstance(parsed, dict)
    return parsed


# ---------------------------------------------------------------- docker-compose.yml


def test_the_reader_agrees_with_pyyaml(compose: dict[str, Any]) -> None:
    import yaml  # in the test extra: the hand reader above must agree with a real parser

    assert compose == yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_the_reader_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="line 2"):
        _Reader("a:\n  b: {c: 1}\n").read()
    with pytest.raises(ValueError, match="unknown alias"):
        _Reader("a: *nowhere\n").read()
    assert _Reader("x: &x\n  k: 1\ny:\n  <<: *x\n  j: '2'\n").read() == {
        "x": {"k": 1},
        "y": {"k": 1, "j": "2"},
    }


def test_compose_has_the_seed_service_names(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "redis", *APP_SERVICES}


@pytest.mark.parametrize(
    ("service", "command"),
    [
        ("migrate", ["dataforge-scheduler", "migrate"]),
        ("celery_worker", ["celery", "-A", "app.celery_app", "worker", "-l", "INFO"]),
        ("celery_beat", ["celery", "-A", "app.celery_app", "beat", "-l", "INFO"]),
        ("api", ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]),
    ],
)
def test_compose_runs_the_documented_commands(
    compose: dict[str, Any], service: str, command: list[str]
) -> None:
    assert compose["services"][service]["command"] == command


def test_compose_commands_name_modules_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for service in ("celery_worker", "celery_beat"):
        module = services[service]["command"][2]
        assert (SERVICE / (module.replace(".", "/") + ".py")).is_file(), module
    module = services["api"]["command"][1].partition(":")[0]
    assert (SERVICE / (module.replace(".", "/") + ".py")).is_file(), module


def test_compose_starts_things_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("celery_worker", "celery_beat", "api"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name


def test_every_app_process_shares_settings_the_library_accepts(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    environments = [services[name]["environment"] for name in APP_SERVICES]
    assert all(env == environments[0] for env in environments)  # one set for all processes
    env = {key: _interpolate(str(value)) for key, value in environments[0].items()}
    for key in [k for k in os.environ if k.startswith("DATAFORGE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    settings = Settings.from_env()

    postgres = services["postgres"]["environment"]
    credentials = f"{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
    database = f"@postgres:5432/{postgres['POSTGRES_DB']}"
    assert f"{credentials}{database}" in settings.database_url
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.celery_broker_url.startswith("redis://redis:6379/")
    assert settings.effective_redis_url.startswith("redis://redis:6379/")
    assert settings.api_keys  # the API refuses to start without keys
    assert settings.task_name_prefix == "dataforge."


def test_the_image_is_built_from_files_that_exist(compose: dict[str, Any]) -> None:
    build = compose["services"]["api"]["build"]
    context = (EXAMPLES / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert dockerfile == SERVICE / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8")
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE)
    sources = [source for line in copies for source in line.split()]
    assert sources
    for source in sources:
        assert (context / source).exists(), source
    cmd = re.search(r"^CMD\s+(\[.*\])$", text, flags=re.MULTILINE)
    assert cmd is not None
    assert json.loads(cmd[1]) == compose["services"]["api"]["command"]
    ignore = (SERVICE / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for source in sources:
        assert f"!{source.rstrip('/')}" in ignore.replace("/\n", "\n"), source
