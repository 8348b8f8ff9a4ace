"""Model name -> backend: resolution, deprecation and sunset, allow-lists, weighted choice."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from extproc.apis import ApiError
from extproc.config.runtime import Deprecation, Model, Route, Runtime, Tenant

# A retired model may reroute to a replacement that is itself retired; the loader
# rejects cycles, and this bounds the walk regardless.
_MAX_REROUTES: Final = 8


@dataclass(slots=True)
class Routed:
    requested: Final[str]  # the model the client asked for
    name: Final[str]  # the name that selected `model` (the replacement's, after a reroute)
    model: Final[Model]
    route: Final[Route]
    upstream_model: Final[str]  # the model id sent with the first attempt
    deprecation: Final[Deprecation | None]  # of the model the client asked for
    rerouted: Final[bool]

    def __init__(
        self,
        requested: str,
        name: str,
        model: Model,
        route: Route,
        upstream_model: str,
        deprecation: Deprecation | None,
        rerouted: bool,
    ) -> None:
        self.requested = requested
        self.name = name
        self.model = model
        self.route = route
        self.upstream_model = upstream_model
        self.deprecation = deprecation
        self.rerouted = rerouted

    def upstream_model_for(self, attempt: int) -> str:
        return self.route.attempts[attempt].upstream_model or canonical_name(self.model, self.name)


def canonical_name(model: Model, name: str) -> str:
    """The name allow-lists are checked against: the config entry's, or the matched one."""
    return name if model.is_pattern else model.name


def resolve(
    runtime: Runtime, requested: str, tenant: Tenant, *, now: dt.datetime, roll: float
) -> Routed | ApiError:
    model = runtime.find_model(requested)
    if model is None:
        return ApiError(
            404,
            f"The model `{requested}` does not exist or you do not have access to it.",
            "model_not_found",
            "model",
        )
    deprecation = model.deprecation
    name = requested
    rerouted = False
    for _ in range(_MAX_REROUTES):
        current = model.deprecation
        if current is None or current.sunset is None or now < current.sunset:
            break
        if not current.reroute:
            instead = f" Use `{current.replacement}` instead." if current.replacement else ""
            return ApiError(
                410,
                f"The model `{name}` was retired on {current.sunset.date().isoformat()}.{instead}",
                "model_retired",
                "model",
            )
        replacement = runtime.find_model(current.replacement)
        if replacement is None:  # the loader guarantees this cannot happen
            break
        model, name, rerouted = replacement, current.replacement, True
    if not tenant.allows(canonical_name(model, name)):
        return ApiError(
            403,
            f"The model `{requested}` is not available to this API key.",
            "model_not_allowed",
            "model",
        )
    route = model.pick(roll)
    return Routed(
        requested=requested,
        name=name,
        model=model,
        route=route,
        # An alias is the gateway's name: the provider gets the model's own name.
        upstream_model=route.attempts[0].upstream_model or canonical_name(model, name),
        deprecation=deprecation,
        rerouted=rerouted,
    )


def listing(runtime: Runtime, tenant: Tenant) -> list[dict[str, object]]:
    """The models a tenant may call, in OpenAI's list format (patterns cannot be listed)."""
    items: list[dict[str, object]] = []
    for model in runtime.models:
        if model.is_pattern or not tenant.allows(model.name):
            continue
        for name in (model.name, *model.aliases):
            items.append(model_object(runtime, model, name))
    return items


def anthropic_model(runtime: Runtime, name: str) -> dict[str, object]:
    """A model in the Anthropic API's list format."""
    created = dt.datetime.fromtimestamp(runtime.loaded_at, dt.UTC)
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def model_object(runtime: Runtime, model: Model, name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": runtime.loaded_at, "owned_by": model.owned_by}
