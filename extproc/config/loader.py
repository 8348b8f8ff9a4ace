"""Load a YAML config: schema mapping, defaults, the schema's rules, then the compiled Runtime.

Each step reports every problem it finds with the field's path; the sections are built
by their own modules (service, backends, models, tenants, accounting), which also check
what the schema cannot: files, addresses, references and fields read against each other.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from extproc.config import accounting, defaults, rules, service
from extproc.config import runtime as rt
from extproc.config import settings as st
from extproc.config.backends import build_backends
from extproc.config.context import Context
from extproc.config.mcp import build_mcp_servers, mcp_settings
from extproc.config.models import build_models, index_models
from extproc.config.policies import compile_policy
from extproc.config.schema import YamlLoader, fill
from extproc.config.tenants import anonymous_tenant, build_tenants, client_credentials
from extproc.config.v1 import config_pb2 as pb
from extproc.policy.rules import Policy

DEFAULT_MAX_REQUEST_BYTES = defaults.of(pb.Limits, "max_request_bytes")


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason, each starting with a path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_file(
    path: str | Path, *, resolve_secrets: bool = True, start_files: bool = True
) -> rt.Runtime:
    """start_files=False (a reload): the files read only when the processes start (the
    listener's and the ext_proc port's TLS files, backends' CA bundles) are resolved but
    not checked. A reload refuses any change to the sections naming them, and the service
    reads its TLS files again on its own, so a rotation caught half done must not refuse
    the credential or routing change landing at the same moment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    return load_text(
        text,
        base_dir=Path(path).resolve().parent,
        resolve_secrets=resolve_secrets,
        start_files=start_files,
    )


def load_text(
    text: str,
    *,
    base_dir: Path | None = None,
    resolve_secrets: bool = True,
    start_files: bool = True,
) -> rt.Runtime:
    try:
        data = yaml.load(text, Loader=YamlLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"<yaml>: {where}{getattr(exc, 'problem', exc)}"]) from None
    return load_data(
        data, base_dir=base_dir, resolve_secrets=resolve_secrets, start_files=start_files
    )


def load_data(
    data: object,
    *,
    base_dir: Path | None = None,
    resolve_secrets: bool = True,
    start_files: bool = True,
) -> rt.Runtime:
    config = pb.Config()
    problems: list[str] = []
    fill(config, data if data is not None else {}, "", problems)
    if problems:
        raise ConfigError(problems)
    defaults.apply(config)
    ctx = Context(config, base_dir or Path.cwd(), resolve_secrets, start_files)
    for path, message in rules.check(config):
        ctx.problem(path, message)
    runtime = _build(ctx)
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return runtime


def _build(ctx: Context) -> rt.Runtime:
    config = ctx.config
    listener = service.listener(ctx)
    settings = service.service(ctx)
    policies = _policies(ctx)
    backends = build_backends(ctx)
    models = build_models(ctx, backends, policies)
    mcp_servers = build_mcp_servers(ctx)
    tenants, by_key, by_spiffe = build_tenants(ctx, policies, mcp_servers)
    anonymous = anonymous_tenant(ctx, tenants)
    credential_headers, credential_params = client_credentials(ctx)
    runtime = rt.Runtime(
        listener=listener,
        service=settings,
        admin=service.admin(ctx),
        store=accounting.budget_store(ctx),
        cache=service.cache(ctx),
        conversations=service.conversations(ctx),
        capture=service.capture(ctx),
        schema_drift=service.schema_drift(ctx),
        telemetry=st.Telemetry(config.telemetry.tenant_labels),
        backends=backends,
        models=models,
        exact_models={},
        pattern_models=[],
        tenants=tenants,
        tenants_by_key_digest=by_key,
        tenants_by_spiffe_id=by_spiffe,
        anonymous_tenant=anonymous,
        max_request_bytes=config.limits.max_request_bytes,
        mcp=mcp_settings(ctx),
        mcp_servers=mcp_servers,
        loaded_at=int(time.time()),
        policies=policies,
        prices=accounting.build_prices(ctx, set(backends)),
        reserved_output_tokens=config.accounting.default_reserved_output_tokens,
        read_usage=not config.accounting.skip_usage,
        external_envoy=settings.external_envoy,
        client_credential_headers=credential_headers,
        client_credential_query_params=credential_params,
    )
    _check_budgets(ctx, runtime)
    index_models(ctx, runtime)
    runtime.metric_models = frozenset(runtime.exact_models) | {m.name for m in runtime.models}
    return runtime


def _policies(ctx: Context) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for index, source in enumerate(ctx.config.policies):
        path = f"policies[{index}]"
        if source.name in policies:
            ctx.problem(f"{path}.name", f'duplicate policy name "{source.name}"')
            continue
        built = compile_policy(source, path, ctx.problem)
        if built is not None:
            policies[source.name] = built
    return policies


def _check_budgets(ctx: Context, runtime: rt.Runtime) -> None:
    """What budgets need from the rest of the config."""
    budgets = [budget for tenant in runtime.tenants.values() for budget in tenant.budgets]
    if runtime.service.workers > 1 and runtime.store.redis is None and budgets:
        ctx.problem(
            "service.workers",
            "budgets with more than one worker need accounting.store.redis "
            "(each worker would keep its own books)",
        )
    if not runtime.read_usage and budgets:
        ctx.problem("accounting.skip_usage", "budgets need usage; remove one or the other")
    if not ctx.config.prices.models and any(budget.max_cost_nanos for budget in budgets):
        ctx.problem("prices.models", "cost budgets need a price table")
