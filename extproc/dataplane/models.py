"""`GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway from its config in
the client's list format (OpenAI's, or Anthropic's for the Anthropic SDK)."""

from __future__ import annotations

from urllib.parse import unquote

from extproc.apis import MODELS_PREFIX, ApiError, Schema
from extproc.config.runtime import Runtime
from extproc.dataplane.stages import Arrival
from extproc.routing import anthropic_model, canonical_name, listing, model_object


def answer(runtime: Runtime, arrival: Arrival, api: Schema) -> tuple[int, object] | ApiError:
    """The status and payload of the answer, or the error."""
    anthropic = api is Schema.ANTHROPIC
    tenant = arrival.tenant
    if arrival.served_path == "/v1/models":
        items = listing(runtime, tenant)
        if not anthropic:
            return 200, {"object": "list", "data": items}
        data = [anthropic_model(runtime, str(item["id"])) for item in items]
        return 200, {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    name = unquote(arrival.served_path[len(MODELS_PREFIX) :])
    # Any name the gateway routes: a model, an alias, or a name one of its patterns serves
    # (`claude-3-haiku` through `claude-*`), as a request for it would be routed.
    model = runtime.find_model(name)
    if model is None or not tenant.allows(canonical_name(model, name)):
        return ApiError(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            "model_not_found",
            "model",
        )
    if anthropic:
        return 200, anthropic_model(runtime, name)
    return 200, model_object(runtime, model, name)
