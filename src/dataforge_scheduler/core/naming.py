"""The rule for ``key_prefix``, the namespace of every Redis key the library writes.

One rule, used by ``Settings`` (when the setting is read) and by ``redis.keys.Keys``
(when a key is built), so a prefix the settings accept is one every key can be built
from: non-empty, no whitespace, none of the glob characters ``* ? [ ] \\`` (``SCAN``
patterns are built from it).
"""

from __future__ import annotations

from dataforge_scheduler.errors import ConfigurationError

__all__ = ["check_key_prefix"]

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
