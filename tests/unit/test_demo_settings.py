"""The demo's settings: embedded services by default, real ones when given, the API key
from the flag, else the environment, else the documented demo key."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from dataforge_scheduler.demo import add_parser, run_demo
from dataforge_scheduler.demo.app import DEMO_API_KEY, DemoOptions, demo_settings
from dataforge_scheduler.errors import ConfigurationError, DataForgeError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DATAFORGE_"):
            monkeypatch.delenv(name)


def test_defaults_need_no_service(tmp_path: Path) -> None:
    settings = demo_settings(DemoOptions(), data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'dataforge-demo.db'}"
    assert settings.redis_url == "memory://"
    assert settings.celery_broker_url == "memory://localhost/"
    assert settings.celery_result_backend == "cache+memory://"
    assert settings.api_keys == [DEMO_API_KEY] == ["demo-key"]
    assert settings.log_console_echo is False  # the narrator shows each line instead


def test_redis_url_serves_as_broker_and_backend_too(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:6379/5"
    options = DemoOptions(redis_url=url, database_url="postgresql+psycopg://u@db/x")
    settings = demo_settings(options, data_dir=None)
    assert (settings.redis_url, settings.celery_broker_url, settings.celery_result_backend) == (
        url,
        url,
        url,
    )
    assert settings.database_url == "postgresql+psycopg://u@db/x"


def test_api_key_flag_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFORGE_API_KEYS", "from-env")
    assert demo_settings(DemoOptions(), data_dir=tmp_path).api_keys == ["from-env"]
    flagged = demo_settings(DemoOptions(api_key="from-flag"), data_dir=tmp_path)
    assert flagged.api_keys == ["from-flag"]


def test_other_settings_still_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFORGE_CELERY_TIMEZONE", "Asia/Shanghai")
    monkeypatch.setenv("DATAFORGE_DATABASE_URL", "postgresql+psycopg://ignored@db/x")
    settings = demo_settings(DemoOptions(), data_dir=tmp_path)
    assert settings.celery_timezone == "Asia/Shanghai"
    assert settings.database_url.startswith("sqlite:///")  # the demo's own, unless flagged


def test_sqlite_default_needs_a_data_dir() -> None:
    with pytest.raises(DataForgeError, match="data directory"):
        demo_settings(DemoOptions(), data_dir=None)


def test_a_public_host_needs_a_key_of_its_own() -> None:
    with pytest.raises(ConfigurationError, match="--api-key") as caught:
        run_demo(DemoOptions(host="0.0.0.0"), duration=1)
    assert caught.value.field == "api_key"


def test_duration_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="--duration must be > 0, got 0"):
        run_demo(DemoOptions(), duration=0)


def test_command_line_options() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["demo", "--port", "9000", "--duration", "25", "--data-dir", "d", "--api-key", "k"]
    )
    assert (args.port, args.duration, args.data_dir, args.api_key) == (9000, 25.0, Path("d"), "k")
    defaults = parser.parse_args(["demo"])
    assert (defaults.host, defaults.port, defaults.duration) == ("127.0.0.1", 8847, None)


def summary_of(outcomes: dict[str, int], *, duration: float | None) -> tuple[int, str]:
    from collections import Counter
    from types import SimpleNamespace
    from typing import Any, cast

    from dataforge_scheduler.demo import _summary
    from dataforge_scheduler.demo.console import Console

    out = io.StringIO()
    narrator = SimpleNamespace(outcomes=Counter(outcomes))
    demo = SimpleNamespace(
        narrator=narrator, data_dir=None, successful_runs=narrator.outcomes["success"]
    )
    code = _summary(cast(Any, demo), Console(out), duration=duration)
    return code, out.getvalue()


def test_a_timed_demo_without_a_successful_run_exits_1() -> None:
    code, text = summary_of({"failed": 2}, duration=25)
    assert code == 1
    assert "demo stopped: 2 failed" in text
    assert "FAIL: no run succeeded within 25 s" in text
    assert summary_of({"failed": 1, "success": 1}, duration=25)[0] == 0
    assert summary_of({}, duration=None)[0] == 0  # stopped by hand: nothing was promised
