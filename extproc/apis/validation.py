"""Request fields checked as each provider's published API types them, before routing.

One table per endpoint (`openai_fields`, `anthropic_fields`, `responses_fields`) names the
fields the gateway reads, translates or forwards with meaning (routing, policy, accounting,
cache keys, translation), with their published types and ranges, and the fields of every
role, part and block type it knows. A value it does not know (a role, part or block type, a
tool or tool_choice type, an enum member) is not refused here: providers add them often,
and OpenAI-compatible servers add their own (vLLM's `video_url` parts, any role). The
backend answers those; where the gateway itself must act on one, it refuses what it cannot
do at that point with a clear 400: a translation (`translate/`) what the other API cannot
express, a policy (`policy/engine.py`) a part whose text it cannot read. Fields a table
does not name pass to the provider unchecked. docs/configuration/errors.md lists the checks
and their sources.
"""

from __future__ import annotations

import re
from typing import Any, Final

from extproc.apis import ApiError, Endpoint, Kind, Schema
from extproc.apis.anthropic_fields import COUNT_TOKENS, MESSAGES
from extproc.apis.checks import STRING, Check, Invalid, Problem, error, missing
from extproc.apis.openai_fields import CHAT, COMPLETIONS, EMBEDDINGS
from extproc.apis.responses_fields import RESPONSES

# Model names are header-safe: printable ASCII without spaces ("org/model:tag" is fine).
# The pattern of the config schema's (printable) rule, for the model names clients send.
MODEL_NAME: Final = re.compile(r"^[\x21-\x7e]{1,256}$")

TABLES: Final[dict[Kind, Check]] = {
    Kind.CHAT: CHAT,
    Kind.COMPLETIONS: COMPLETIONS,
    Kind.EMBEDDINGS: EMBEDDINGS,
    Kind.MESSAGES: MESSAGES,
    Kind.RESPONSES: RESPONSES,
}
# A token count's body is the request it counts, as each API's endpoint takes it.
_COUNTS: Final[dict[Schema, Check]] = {
    Schema.ANTHROPIC: COUNT_TOKENS,
    Schema.OPENAI_RESPONSES: RESPONSES,
}


def validate(endpoint: Endpoint, body: dict[str, Any]) -> ApiError | None:
    """The first field of the body that breaks the endpoint's published API, as the 400
    its client expects; None when every field the gateway knows fits."""
    model = body.get("model")
    if model is None and endpoint.api is not Schema.ANTHROPIC:
        return ApiError(
            400, "You must provide a model parameter.", "missing_required_parameter", "model"
        )
    if type(model) is not str:
        invalid = missing("model") if model is None else Invalid(Problem.TYPE, model, STRING)
        invalid.path[:] = ["model"]
        return error(invalid, endpoint.api)
    if not MODEL_NAME.match(model):
        # The gateway's own rule: names a config can route (no spaces, no control bytes).
        return ApiError(400, "Invalid model name.", "invalid_value", "model")
    table = _COUNTS.get(endpoint.api) if endpoint.counts else TABLES.get(endpoint.kind)
    if table is not None:
        try:
            table(body)
        except Invalid as invalid:
            return error(invalid, endpoint.api)
    return None
