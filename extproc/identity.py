"""Who is calling: a gateway API key, an mTLS peer identity, or the anonymous tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Final
from urllib.parse import unquote_plus

from extproc.apis import ApiError
from extproc.config.runtime import Runtime, Tenant
from extproc.names import CLIENT_CERT_HEADER, GATEWAY_KEY_HEADERS

MISSING_KEY: Final = ApiError(
    401,
    "You didn't provide an API key. Provide it as 'Authorization: Bearer <key>', "
    "'x-api-key', 'api-key' or 'x-goog-api-key'.",
    "missing_api_key",
)
INVALID_KEY: Final = ApiError(401, "Incorrect API key provided.", "invalid_api_key")


def _conflict(first: str, second: str) -> ApiError:
    return ApiError(
        401,
        f"Different API keys were provided in '{first}' and '{second}'; provide one key.",
        "conflicting_api_keys",
    )


def presented_key(headers: Mapping[str, str]) -> str | ApiError | None:
    """The gateway key from "Authorization: Bearer <key>", x-api-key, api-key or
    x-goog-api-key, if any. The same key in several of them is one key; two different
    keys are refused rather than one picked, since which one the client meant is a guess."""
    found: str | None = None
    where = ""
    for name in GATEWAY_KEY_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        if name == "authorization":
            scheme, _, value = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                continue  # Basic and other schemes carry no gateway key
        key = value.strip()
        if not key:
            continue
        if found is None:
            found, where = key, name
        elif key != found:
            return _conflict(where, name)
    return found


def without_params(query: str, params: Collection[str]) -> str:
    """The query string without the named parameters (compared unescaped, in lower case,
    as a server would read them: "%6Bey" is "key"). Some servers also split on ";", so a
    parameter after one is removed too."""
    kept = []
    for part in query.split("&"):
        if ";" in part:
            part = ";".join(p for p in part.split(";") if not _named(p, params))
        if part and not _named(part, params):
            kept.append(part)
    return "&".join(kept)


def _named(part: str, params: Collection[str]) -> bool:
    return unquote_plus(part.partition("=")[0]).lower() in params


def spiffe_id(xfcc: str) -> str | None:
    """The URI SAN of the peer certificate Envoy described in x-forwarded-client-cert."""
    # Envoy appends its element last; with SANITIZE_SET it is the only one.
    element = xfcc.rsplit(",", 1)[-1]
    for pair in element.split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "uri":
            value = value.strip().strip('"')
            return value or None
    return None


def identify(runtime: Runtime, headers: Mapping[str, str]) -> Tenant | ApiError:
    # A key is only checked when key authentication is in use; otherwise SDKs that insist
    # on sending some key (the OpenAI SDK does) still reach the anonymous tenant. The key
    # is removed from the upstream request either way.
    if runtime.tenants_by_key_digest:
        key = presented_key(headers)
        if isinstance(key, ApiError):
            return key
        if key is not None:
            tenant = runtime.tenants_by_key_digest.get(hashlib.sha256(key.encode()).hexdigest())
            return tenant if tenant is not None else INVALID_KEY
    xfcc = headers.get(CLIENT_CERT_HEADER)
    if xfcc:
        peer = spiffe_id(xfcc)
        tenant = runtime.tenants_by_spiffe_id.get(peer) if peer else None
        if tenant is not None:
            return tenant
    if runtime.anonymous_tenant is not None:
        return runtime.anonymous_tenant
    return MISSING_KEY
