"""Who is calling: a gateway API key, an mTLS peer identity, or the anonymous tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from urllib.parse import unquote_plus

from extproc.apis import ApiError
from extproc.config.runtime import Runtime, Tenant
from extproc.names import CLIENT_CERT_HEADER

MISSING_KEY = ApiError(
    401,
    "You didn't provide an API key. Provide it as 'Authorization: Bearer <key>' or 'x-api-key'.",
    "missing_api_key",
)
INVALID_KEY = ApiError(401, "Incorrect API key provided.", "invalid_api_key")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from "Authorization: Bearer <key>" or "x-api-key: <key>", if any."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def without_params(query: str, params: Collection[str]) -> str:
    """The query string without the named parameters (compared unescaped, in lower case,
    as a server would read them: "%6Bey" is "key")."""
    kept = [
        part
        for part in query.split("&")
        if part and unquote_plus(part.partition("=")[0]).lower() not in params
    ]
    return "&".join(kept)


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
    key = presented_key(headers)
    # A key is only checked when key authentication is in use; otherwise SDKs that insist
    # on sending some key (the OpenAI SDK does) still reach the anonymous tenant. The key
    # is removed from the upstream request either way.
    if key is not None and runtime.tenants_by_key_digest:
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
