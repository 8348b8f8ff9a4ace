"""The client-facing APIs' schemas and kinds, the paths the gateway serves, and errors in
each client's schema (re-exported by the package: `from extproc.apis import Kind`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import orjson


class Schema(StrEnum):
    """The API a client speaks, or a backend serves: one member per API, as each has its
    own codec (translate/). Errors come in two envelopes: Anthropic's, and OpenAI's for
    every other API (ApiError.body)."""

    OPENAI = "openai"  # Chat Completions, completions, embeddings, models
    ANTHROPIC = "anthropic"
    OPENAI_RESPONSES = "openai_responses"  # OpenAI's Responses API (`/v1/responses`)


class Kind(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    MESSAGES = "messages"
    MODELS = "models"
    RESPONSES = "responses"
    COUNT_TOKENS = "count_tokens"  # a prompt's tokens, counted before it is sent
    STORED_RESPONSE = "stored_response"  # a Responses API answer the gateway keeps


# Endpoints whose responses carry token usage: metered, charged to budgets, cached.
METERED: Final = frozenset(
    {Kind.CHAT, Kind.MESSAGES, Kind.EMBEDDINGS, Kind.COMPLETIONS, Kind.RESPONSES}
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: Kind
    api: Schema  # the schema the client speaks on this path
    method: str
    # Path below the version prefix; appended to a backend's base URL path.
    suffix: str
    # A token count's endpoint: the kind of request its body is, read as that (policies,
    # counts).
    counts: Kind | None = None
    # The kind of request the body is (a field, not a property: read on every request).
    body_kind: Kind = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "body_kind", self.counts or self.kind)


ENDPOINTS: Final[dict[str, Endpoint]] = {
    "/v1/chat/completions": Endpoint(Kind.CHAT, Schema.OPENAI, "POST", "/chat/completions"),
    "/v1/completions": Endpoint(Kind.COMPLETIONS, Schema.OPENAI, "POST", "/completions"),
    "/v1/embeddings": Endpoint(Kind.EMBEDDINGS, Schema.OPENAI, "POST", "/embeddings"),
    "/v1/messages": Endpoint(Kind.MESSAGES, Schema.ANTHROPIC, "POST", "/messages"),
    "/v1/messages/count_tokens": Endpoint(
        Kind.COUNT_TOKENS, Schema.ANTHROPIC, "POST", "/messages/count_tokens", Kind.MESSAGES
    ),
    "/v1/models": Endpoint(Kind.MODELS, Schema.OPENAI, "GET", "/models"),
    "/v1/responses": Endpoint(Kind.RESPONSES, Schema.OPENAI_RESPONSES, "POST", "/responses"),
    "/v1/responses/input_tokens": Endpoint(
        Kind.COUNT_TOKENS,
        Schema.OPENAI_RESPONSES,
        "POST",
        "/responses/input_tokens",
        Kind.RESPONSES,
    ),
}
MODELS_PREFIX: Final = "/v1/models/"
# `/v1/responses/{id}` (GET, DELETE) and `/v1/responses/{id}/input_items` (GET).
RESPONSES_PREFIX: Final = "/v1/responses/"
INPUT_ITEMS: Final = "/input_items"
STORED_RESPONSE: Final = Endpoint(
    Kind.STORED_RESPONSE, Schema.OPENAI_RESPONSES, "GET", "/responses"
)


def api_for_path(path: str) -> Schema:
    """The schema errors are written in when nothing better is known."""
    return Schema.ANTHROPIC if path.startswith("/v1/messages") else Schema.OPENAI


# OpenAI's error "type" values by status, as its API returns them.
_OPENAI_TYPES: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    421: "invalid_request_error",
    429: "rate_limit_error",
}
# Anthropic's documented error types by status.
_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    410: "not_found_error",
    413: "request_too_large",
    421: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True)
class ApiError:
    """An error the client is meant to see: an allow-listed status, message and code."""

    status: int
    message: str
    code: str
    param: str | None = None

    def body(self, api: Schema) -> bytes:
        if api is Schema.ANTHROPIC:
            kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
            return orjson.dumps({"type": "error", "error": {"type": kind, "message": self.message}})
        kind = _OPENAI_TYPES.get(self.status, "server_error")
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": kind,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )
