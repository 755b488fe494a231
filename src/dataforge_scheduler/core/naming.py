"""The rules for the names Redis keys are built from: ``key_prefix`` and run ids.

``check_key_prefix`` is used by ``Settings`` (when the setting is read) and by
``redis.keys.Keys`` (when a key is built), so a prefix the settings accept is one every
key can be built from: non-empty, no whitespace, none of the glob characters
``* ? [ ] \\`` (``SCAN`` patterns are built from it). ``check_run_id`` is what names a
run's log and state on either backend: its Celery task id, a non-empty string without
whitespace. ``check_key_name`` is the rule for the operator's names of API keys (which
the audit trail shows as ``key:<name>``).
"""

from __future__ import annotations

import re

from dataforge_scheduler.errors import ConfigurationError

__all__ = ["check_key_name", "check_key_prefix", "check_run_id"]

_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_GLOB_CHARS = frozenset("*?[]\\")


def check_key_prefix(prefix: object) -> str:
    """``prefix`` if it is a valid key prefix; ``ConfigurationError`` naming the problem."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(
            f"key_prefix must be a non-empty string, got {prefix!r}", field="key_prefix"
        )
    bad = "".join(sorted({ch for ch in prefix if ch.isspace() or ch in _GLOB_CHARS}))
    if bad:
        raise ConfigurationError(
            f"key_prefix {prefix!r} contains {bad!r}: it must not contain whitespace or "
            "the glob characters * ? [ ] \\ (SCAN patterns are built from it)",
            field="key_prefix",
        )
    return prefix


def check_run_id(run_id: object) -> str:
    """``run_id`` if it can name a run (its Celery task id); ``ConfigurationError``."""
    # split() cuts at exactly what str.isspace() calls whitespace, at C speed (hot path)
    if not isinstance(run_id, str) or run_id.split() != [run_id]:
        raise ConfigurationError(
            "a run id (its Celery task id) must be a non-empty string without whitespace, "
            f"got {run_id!r}",
            field="run_id",
        )
    return run_id


def check_key_name(name: object, *, field: str) -> str:
    """``name`` if it can name an API key: 1-64 ASCII letters, digits, ``.``, ``_`` or
    ``-``, starting with a letter or digit; ``ConfigurationError`` naming ``field``."""
    if not isinstance(name, str) or _KEY_NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"{field}: key name {name!r} is invalid; a name is 1-64 ASCII letters, digits, "
            "'.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return name
