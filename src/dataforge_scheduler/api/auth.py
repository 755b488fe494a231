"""Who is calling: API keys (three ways to send one), read-only keys, a host's own hook.

A key is accepted as the ``X-API-Key`` header, as ``Authorization: Bearer <key>``, or as
the seed's ``?api_key=`` query parameter. Keys are compared in constant time against
every configured key (no early exit that would tell which key was close). A host with
its own authentication passes ``authenticate(scope) -> principal | None`` (sync or
async): a ``Principal`` or a name means "let in", ``None`` falls back to the keys. A
key's principal is named by the operator's name for it or by its position
(``key:ci-bot``, ``key:2``), never by the key or a hash of it, so audit rows and logs
hold nothing to test a guess against; ``redact_query_string`` masks ``api_key`` in the scope
before any server access log can print it.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from dataforge_scheduler.api.errors import HTTPError
from dataforge_scheduler.api.http import Request, Scope
from dataforge_scheduler.core.naming import check_key_name
from dataforge_scheduler.errors import ConfigurationError

__all__ = [
    "API_KEY_HEADER",
    "API_KEY_QUERY",
    "AuthHook",
    "Authenticator",
    "Principal",
    "redact_query_string",
]

logger = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
API_KEY_QUERY = "api_key"
_CHALLENGE = [("www-authenticate", 'Bearer realm="dataforge", ApiKey header="X-API-Key"')]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; ``name`` goes into the audit trail."""

    name: str
    read_only: bool = False


AuthHook = Callable[[Scope], "Principal | str | Awaitable[Principal | str | None] | None"]


#: Shortest API key ``create_app`` accepts unless told otherwise (the demo and the pytest
#: plugin's client, whose keys are not secrets, accept any).
DEFAULT_MIN_KEY_LENGTH = 16

Keys = Iterable[str] | Mapping[str, str]


def named_keys(keys: Keys, *, read_only: bool) -> list[tuple[str, Principal]]:
    """Each key with its principal: ``key:<name>`` for a mapping of names to keys,
    ``key:<n>`` (``read-key:<n>``) by position in a list, counted from 1. Nothing of the
    key itself is in the name, so the audit trail, which any key may read, gives no way
    to test a guess offline."""
    kind = "read-key" if read_only else "key"
    if isinstance(keys, Mapping):
        field = "api_read_only_keys" if read_only else "api_keys"
        pairs = [(check_key_name(name, field=field), key) for name, key in keys.items()]
    else:
        pairs = [(str(number), key) for number, key in enumerate(keys, start=1)]
    return [(key, Principal(name=f"{kind}:{name}", read_only=read_only)) for name, key in pairs]


class Authenticator:
    """Resolves the caller of a request, or raises 401."""

    def __init__(
        self,
        *,
        keys: Keys,
        read_only_keys: Keys = (),
        hook: AuthHook | None = None,
        allow_anonymous: bool = False,
        anonymous_writes: bool = False,
        min_key_length: int = DEFAULT_MIN_KEY_LENGTH,
    ) -> None:
        named = [
            (field, key, principal)
            for field, given, read_only in (
                ("api_keys", keys, False),
                ("api_read_only_keys", read_only_keys, True),
            )
            for key, principal in named_keys(given, read_only=read_only)
        ]
        for field, key, principal in named:  # never quote a key: it is a secret
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"API key {principal.name} is empty", field=field)
            if len(key) < min_key_length:
                raise ConfigurationError(
                    f"API key {principal.name} has {len(key)} characters; keys need at "
                    f"least {min_key_length} (api_min_key_length) so they cannot be guessed",
                    field=field,
                )
        self._keys = [(key.encode("utf-8"), principal) for _, key, principal in named]
        self._hook = hook
        self._allow_anonymous = allow_anonymous
        if anonymous_writes and not allow_anonymous:
            raise ConfigurationError(
                "anonymous_writes needs allow_anonymous=True", field="anonymous_writes"
            )
        self._anonymous = Principal(name="anonymous", read_only=not anonymous_writes)
        if not self._keys and hook is None and not allow_anonymous:
            raise ConfigurationError(
                "the API has no way to authenticate callers: pass api_keys=[...] or set "
                "DATAFORGE_API_KEYS, pass authenticate=..., or pass allow_anonymous=True "
                "(trusted networks and demos only)",
                field="api_keys",
            )

    async def authenticate(self, request: Request) -> Principal:
        if self._hook is not None:
            found = await _call_hook(self._hook, request.scope)
            if found is not None:
                return found
        presented = _presented_key(request)
        if presented is not None:
            principal = self._match(presented)
            if principal is not None:
                return principal
        if self._allow_anonymous and presented is None:
            return self._anonymous
        reason = "invalid API key" if presented is not None else "missing API key"
        raise HTTPError(401, f"Not authenticated: {reason}", headers=_CHALLENGE)

    def _match(self, presented: str) -> Principal | None:
        given = presented.encode("utf-8", "replace")
        found: Principal | None = None
        for key, principal in self._keys:
            # compare against every key: the time taken never tells which one was close
            if hmac.compare_digest(given, key) and found is None:
                found = principal
        return found


async def _call_hook(hook: AuthHook, scope: Scope) -> Principal | None:
    result: Any = hook(scope)
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return None
    if isinstance(result, Principal):
        return result
    if isinstance(result, str) and result:
        return Principal(name=result)
    logger.error("authenticate hook returned %r; expected a Principal, a name or None", result)
    raise HTTPError(401, "Not authenticated", headers=_CHALLENGE)


def _presented_key(request: Request) -> str | None:
    header = request.headers.get(API_KEY_HEADER)
    if header:
        return header.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    query = request.query.get(API_KEY_QUERY)
    if query:
        return query
    return None


def redact_query_string(query_string: bytes) -> bytes:
    """``query_string`` with the value of every ``api_key`` parameter replaced by ``***``.

    Names are compared decoded, as ``Request.query`` reads them (``api%5Fkey`` is
    ``api_key`` there too); a query string without one is returned unchanged.
    """
    if not query_string:
        return query_string
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if all(k != API_KEY_QUERY for k, _ in pairs):
        return query_string
    masked = [(k, "***" if k == API_KEY_QUERY else v) for k, v in pairs]
    return urlencode(masked, safe="*/:,").encode("latin-1")
