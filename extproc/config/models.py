"""Models: routes and fallbacks resolved to backends, deprecations, the name index."""

from __future__ import annotations

import datetime as dt
import email.utils

from extproc.config import runtime as rt
from extproc.config.context import Context
from extproc.config.service import cache_policy
from extproc.config.v1 import config_pb2 as pb
from extproc.glob import Glob
from extproc.policy.rules import Policy


def parse_instant(text: str) -> dt.datetime | None:
    """An RFC 3339 date ("2026-01-31", midnight UTC) or timestamp; None when malformed."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def build_models(
    ctx: Context, backends: dict[str, rt.Backend], policies: dict[str, Policy]
) -> list[rt.Model]:
    models: list[rt.Model] = []
    for index, model in enumerate(ctx.config.models):
        built = _model(ctx, model, index, backends, policies)
        if built is not None:
            models.append(built)
    return models


def policy_refs(
    ctx: Context, names: list[str], path: str, policies: dict[str, Policy]
) -> tuple[Policy, ...]:
    found = []
    for index, name in enumerate(names):
        policy = policies.get(name)
        if policy is None:
            if not any(p.name == name for p in ctx.config.policies):
                ctx.problem(f"{path}[{index}]", f'no policy named "{name}"')
        else:
            found.append(policy)
    return tuple(found)


def _model(
    ctx: Context,
    model: pb.Model,
    index: int,
    backends: dict[str, rt.Backend],
    policies: dict[str, Policy],
) -> rt.Model | None:
    path = f"models[{index}]"
    fallbacks = [
        _target(ctx, t, f"{path}.fallbacks[{i}]", backends) for i, t in enumerate(model.fallbacks)
    ]
    routes: list[rt.Route] = []
    cumulative: list[int] = []
    total = 0
    for position, target in enumerate(model.routes):
        first = _target(ctx, target, f"{path}.routes[{position}]", backends)
        total += target.weight
        if first is None or None in fallbacks:
            continue
        attempts = (first, *(f for f in fallbacks if f is not None))
        cluster = first.backend.cluster if len(attempts) == 1 else f"fallback.{index}.{position}"
        routes.append(rt.Route(attempts=attempts, cluster=cluster))
        cumulative.append(total)
    deprecation = _deprecation(ctx, model, path)
    refs = policy_refs(ctx, list(model.policies), f"{path}.policies", policies)
    # A missing policy leaves the model for the checks that name it.
    if ctx.failed(path, ignoring=(".policies",)):
        return None
    return rt.Model(
        name=model.name,
        aliases=tuple(model.aliases),
        routes=tuple(routes),
        cumulative_weights=tuple(cumulative),
        deprecation=deprecation,
        owned_by=model.owned_by,
        retry_on=tuple(model.retry_on),
        is_pattern="*" in model.name,
        policies=refs,
        cache=cache_policy(model.cache),
    )


def _target(
    ctx: Context, target: pb.Target, path: str, backends: dict[str, rt.Backend]
) -> rt.Target | None:
    backend = backends.get(target.backend)
    if backend is None:
        # An empty name is reported by the schema, a backend with problems where it is.
        if target.backend and not any(b.name == target.backend for b in ctx.config.backends):
            ctx.problem(f"{path}.backend", f'no backend named "{target.backend}"')
        return None
    if ctx.failed(path):
        return None
    return rt.Target(backend=backend, upstream_model=target.upstream_model)


def _deprecation(ctx: Context, model: pb.Model, path: str) -> rt.Deprecation | None:
    if not model.HasField("deprecation"):
        return None
    source = model.deprecation
    path = f"{path}.deprecation"
    instants: dict[str, dt.datetime | None] = {}
    for name in ("deprecated_at", "sunset"):
        text = getattr(source, name)
        instants[name] = parse_instant(text) if text else None
        if text and instants[name] is None:
            ctx.problem(f"{path}.{name}", f'"{text}" is not an RFC 3339 date or timestamp')
    deprecated_at, sunset = instants["deprecated_at"], instants["sunset"]
    if deprecated_at and sunset and deprecated_at > sunset:
        ctx.problem(f"{path}.sunset", "is before deprecated_at")
    reroute = source.after_sunset == pb.Deprecation.REROUTE
    if reroute and not source.replacement:
        ctx.problem(f"{path}.replacement", "required when after_sunset is reroute")
    if ctx.failed(path):
        return None
    headers: list[tuple[str, str]] = []
    # RFC 9745: a structured-field date; without a date the model is deprecated as of now.
    headers.append(
        ("deprecation", f"@{int((deprecated_at or dt.datetime.now(dt.UTC)).timestamp())}")
    )
    if sunset:
        headers.append(
            ("sunset", email.utils.format_datetime(sunset.astimezone(dt.UTC), usegmt=True))
        )
    if source.replacement:
        headers.append(("link", f'</v1/models/{source.replacement}>; rel="successor-version"'))
    return rt.Deprecation(
        deprecated_at=deprecated_at,
        sunset=sunset,
        replacement=source.replacement,
        reroute=reroute,
        response_headers=tuple(headers),
    )


def index_models(ctx: Context, runtime: rt.Runtime) -> None:
    seen: dict[str, str] = {}
    for index, source in enumerate(ctx.config.models):
        names = [(f"models[{index}].name", source.name)] + [
            (f"models[{index}].aliases[{i}]", a) for i, a in enumerate(source.aliases)
        ]
        for path, name in names:
            if name in seen:
                ctx.problem(path, f'"{name}" is already defined at {seen[name]}')
            else:
                seen[name] = path
    for model in runtime.models:
        if model.is_pattern:
            runtime.pattern_models.append((Glob(model.name), model))
        else:
            runtime.exact_models.setdefault(model.name, model)
        for alias in model.aliases:
            runtime.exact_models.setdefault(alias, model)
        for route in model.routes:
            if route.has_fallbacks:
                runtime.fallback_routes[route.cluster] = route
    for index, source in enumerate(ctx.config.models):
        replacement = source.deprecation.replacement
        if replacement and runtime.find_model(replacement) is None:
            ctx.problem(
                f"models[{index}].deprecation.replacement", f'no model named "{replacement}"'
            )
    _check_reroute_cycles(ctx, runtime)


def _check_reroute_cycles(ctx: Context, runtime: rt.Runtime) -> None:
    for index, model in enumerate(runtime.models):
        chain = [model.name]
        current: rt.Model | None = model
        while current and current.deprecation and current.deprecation.reroute:
            current = runtime.find_model(current.deprecation.replacement)
            if current is None:
                break
            if current.name in chain:
                cycle = " -> ".join([*chain, current.name])
                ctx.problem(
                    f"models[{index}].deprecation.replacement", f"reroutes in a cycle: {cycle}"
                )
                break
            chain.append(current.name)
