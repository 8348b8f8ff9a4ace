"""Tenants and how callers are identified: key digests, SPIFFE ids, the client's
credential headers and query parameters."""

from __future__ import annotations

from collections.abc import Collection

from extproc import names
from extproc.config import accounting
from extproc.config import runtime as rt
from extproc.config.context import Context
from extproc.config.models import policy_refs
from extproc.config.service import cache_policy
from extproc.config.tools import compile_tool_access
from extproc.glob import Glob
from extproc.policy.rules import Policy

Tenants = tuple[dict[str, rt.Tenant], dict[str, rt.Tenant], dict[str, rt.Tenant]]


def build_tenants(
    ctx: Context, policies: dict[str, Policy], mcp_servers: Collection[str] = ()
) -> Tenants:
    """Tenants by name, by API key digest, and by SPIFFE id."""
    tenants: dict[str, rt.Tenant] = {}
    by_key: dict[str, rt.Tenant] = {}
    by_spiffe: dict[str, rt.Tenant] = {}
    for index, source in enumerate(ctx.config.tenants):
        path = f"tenants[{index}]"
        if ctx.failed(f"{path}.name"):
            continue
        if source.name in tenants:
            ctx.problem(f"{path}.name", f'duplicate tenant name "{source.name}"')
            continue
        tenant = rt.Tenant(
            name=source.name,
            model_globs=tuple(Glob(pattern) for pattern in source.models),
            policies=policy_refs(ctx, list(source.policies), f"{path}.policies", policies),
            budgets=accounting.build_budgets(ctx, source, path),
            cache=cache_policy(source.cache),
            mcp=compile_tool_access(ctx, source, path, mcp_servers),
        )
        tenants[source.name] = tenant
        for position, digest in enumerate(source.api_key_sha256):
            here = f"{path}.api_key_sha256[{position}]"
            normalized = digest.lower()
            if ctx.failed(here):
                continue
            if normalized in by_key:
                ctx.problem(here, f'digest already belongs to tenant "{by_key[normalized].name}"')
            else:
                by_key[normalized] = tenant
        for position, spiffe_id in enumerate(source.spiffe_ids):
            here = f"{path}.spiffe_ids[{position}]"
            if ctx.failed(here):
                continue
            if spiffe_id in by_spiffe:
                ctx.problem(here, f'already belongs to tenant "{by_spiffe[spiffe_id].name}"')
            else:
                by_spiffe[spiffe_id] = tenant
    return tenants, by_key, by_spiffe


def anonymous_tenant(ctx: Context, tenants: dict[str, rt.Tenant]) -> rt.Tenant | None:
    name = ctx.config.auth.anonymous_tenant
    if not name:
        return None
    tenant = tenants.get(name)
    if tenant is None:
        ctx.problem("auth.anonymous_tenant", f'no tenant named "{name}"')
    return tenant


def client_credentials(ctx: Context) -> tuple[tuple[str, ...], frozenset[str]]:
    """The headers and query parameters that carry a client's credentials, lower case."""
    auth = ctx.config.auth
    headers: list[str] = []
    for i, name in enumerate(auth.client_credential_headers):
        lowered = name.lower()
        if ctx.failed(f"auth.client_credential_headers[{i}]"):
            continue
        if lowered in headers:
            ctx.problem(f"auth.client_credential_headers[{i}]", f'"{name}" is listed twice')
        else:
            headers.append(lowered)
    missing = [name for name in names.GATEWAY_KEY_HEADERS if name not in headers]
    if missing:
        ctx.problem(
            "auth.client_credential_headers",
            f"must include {', '.join(missing)}: the gateway reads client keys there",
        )
    params = frozenset(name.lower() for name in auth.client_credential_query_params)
    return tuple(headers), params
