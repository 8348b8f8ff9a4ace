"""Request fields checked as each provider's published API types them, before routing.

One table per endpoint names the fields the gateway reads, translates or forwards with
meaning (routing, policy, accounting, cache keys, translation), with their published types,
ranges and, where the gateway acts on the value, enums (roles, part and block types, tool
and tool_choice types). Fields a table does not name pass to the provider unchecked:
providers add fields often, and an old gateway must not refuse a new one.

Sources: OpenAI's OpenAPI spec (github.com/openai/openai-openapi, `CreateChatCompletionRequest`,
`CreateCompletionRequest`, `CreateEmbeddingRequest`) and the Anthropic SDK's types of the
Messages API (`MessageCreateParams`, GA and beta content blocks), both as pinned in
`constraints.txt`; the README's Errors section lists the ranges and their sources.
"""

from __future__ import annotations

from typing import Any

from extproc.apis import ApiError, Endpoint, Kind
from extproc.apis.checks import (
    ARRAY,
    INTEGER,
    STRING,
    Check,
    Expected,
    Invalid,
    Problem,
    anything,
    array,
    boolean,
    by_type,
    enum,
    error,
    fields,
    integer,
    missing,
    number,
    string,
    tagged,
)
from extproc.config.loader import MODEL_NAME
from extproc.config.runtime import Schema

# -- shared pieces ----------------------------------------------------------------------

_PARTS = Expected("one of a string or array of objects", "a valid string or a valid list")
_STRINGS = Expected("one of a string or array of strings", "a valid string or a valid list")
_TOKENS = Expected(
    "one of a string, array of strings, array of integers or array of arrays of integers",
    "a valid string or a valid list",
)


def _content(**parts: Check) -> Check:
    """Message content: a string, or a non-empty array of parts of these types."""
    return by_type(_PARTS, {str: None, list: array(tagged("type", parts), min_items=1)})


def _all_ints(values: list[Any]) -> bool:
    """Whether every element is an integer, at C speed: a sum of integers is an integer, a
    float makes it a float and anything else raises. (A boolean passes as 1; the provider
    refuses it.) A Python loop over millions of token ids would cost as much as parsing."""
    try:
        return type(sum(values)) is int
    except TypeError:
        return False


def _token_lists(*, min_items: int, max_items: int | None) -> Check:
    """An array of strings, of token ids, or of non-empty arrays of token ids (prompts and
    embedding inputs)."""
    check_length = array(min_items=min_items, max_items=max_items)

    def check(value: list[Any]) -> None:
        check_length(value)
        if not value:
            return
        first = type(value[0])
        if first is int and _all_ints(value):
            return
        if first is str and set(map(type, value)) == {str}:
            return
        if first is list and set(map(type, value)) == {list}:
            for index, ids in enumerate(value):
                if ids and _all_ints(ids):
                    continue
                invalid = _misfit(ids, int) if ids else Invalid(Problem.EMPTY, ids, 1)
                invalid.path.append(index)
                raise invalid
            return
        raise _misfit(value, first if first in (str, int, list) else str)

    return check


def _misfit(values: list[Any], kind: type) -> Invalid:
    """The first element of `values` that is not a `kind`, as the failure to report."""
    position = next(i for i, v in enumerate(values) if type(v) is not kind)
    expected = {str: STRING, int: INTEGER, list: ARRAY}[kind]
    invalid = Invalid(Problem.TYPE, values[position], expected)
    invalid.path.append(position)
    return invalid


_STOP = by_type(_STRINGS, {str: None, list: array(string, min_items=1, max_items=4)})
_STREAM_OPTIONS = fields({"include_usage": boolean, "include_obfuscation": boolean})
_SAMPLING: dict[str, Check] = {
    "stream": boolean,
    "stream_options": _STREAM_OPTIONS,
    "n": integer(1, 128),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "stop": _STOP,
    "seed": integer(),
    "user": string,
}

# -- OpenAI chat completions --------------------------------------------------------------

_TEXT_PART = fields({"text": string}, required=("text",))
_USER_PARTS = {
    "text": _TEXT_PART,
    "image_url": fields(
        {"image_url": fields({"url": string, "detail": string}, required=("url",))},
        required=("image_url",),
    ),
    "input_audio": fields(
        {"input_audio": fields({"data": string, "format": string}, required=("data", "format"))},
        required=("input_audio",),
    ),
    "file": fields(
        {"file": fields({"file_data": string, "file_id": string, "filename": string})},
        required=("file",),
    ),
}


def _named(kind: str, table: dict[str, Check], required: tuple[str, ...]) -> Check:
    """`{"type": kind, kind: {...}}`: the shape of OpenAI's tools, tool calls and choices."""
    return fields({kind: fields(table, required=required)}, required=(kind,))


_TOOL_CALL = tagged(
    "type",
    {
        "function": fields(
            {
                "id": string,
                "function": fields(
                    {"name": string, "arguments": string}, required=("name", "arguments")
                ),
            },
            required=("id", "function"),
        ),
        "custom": fields(
            {"id": string, "custom": fields({"name": string, "input": string})},
            required=("id", "custom"),
        ),
    },
)
_SYSTEM = fields({"content": _content(text=_TEXT_PART), "name": string}, required=("content",))
_CHAT_MESSAGE = tagged(
    "role",
    {
        "system": _SYSTEM,
        "developer": _SYSTEM,
        "user": fields({"content": _content(**_USER_PARTS), "name": string}, required=("content",)),
        "assistant": fields(
            {
                "content": _content(
                    text=_TEXT_PART, refusal=fields({"refusal": string}, required=("refusal",))
                ),
                "refusal": string,
                "name": string,
                "tool_calls": array(_TOOL_CALL),
            }
        ),
        "tool": fields(
            {"content": _content(text=_TEXT_PART), "tool_call_id": string},
            required=("content", "tool_call_id"),
        ),
        "function": fields({"content": string, "name": string}, required=("name",)),
    },
)
_CHAT_TOOL = tagged(
    "type",
    {
        "function": _named(
            "function",
            {"name": string, "description": string, "parameters": anything, "strict": boolean},
            ("name",),
        ),
        "custom": _named("custom", {"name": string, "description": string}, ("name",)),
    },
)
_CHAT_TOOL_CHOICE = by_type(
    Expected("one of a string or object", "a valid string or a valid dictionary"),
    {
        str: enum("none", "auto", "required"),
        dict: tagged(
            "type",
            {
                "function": _named("function", {"name": string}, ("name",)),
                "custom": _named("custom", {"name": string}, ("name",)),
                "allowed_tools": fields({"allowed_tools": anything}, required=("allowed_tools",)),
            },
        ),
    },
)
_RESPONSE_FORMAT = tagged(
    "type",
    {
        "text": anything,
        "json_object": anything,
        "json_schema": _named(
            "json_schema",
            {"name": string, "description": string, "schema": anything, "strict": boolean},
            ("name",),
        ),
    },
)
_CHAT = fields(
    {
        "messages": array(_CHAT_MESSAGE, min_items=1),
        **_SAMPLING,
        # The spec gives no minimum; the API answers 0 with `integer_below_min_value`.
        "max_tokens": integer(1),
        "max_completion_tokens": integer(1),
        "logprobs": boolean,
        "top_logprobs": integer(0, 20),
        "tools": array(_CHAT_TOOL),
        "tool_choice": _CHAT_TOOL_CHOICE,
        "parallel_tool_calls": boolean,
        "response_format": _RESPONSE_FORMAT,
    },
    required=("messages",),
)

# -- OpenAI completions and embeddings ----------------------------------------------------

_COMPLETIONS = fields(
    {
        "prompt": by_type(_TOKENS, {str: None, list: _token_lists(min_items=0, max_items=None)}),
        **_SAMPLING,
        "max_tokens": integer(0),
        "logprobs": integer(0, 5),
        "best_of": integer(0, 20),
        "echo": boolean,
        "suffix": string,
    },
    required=("prompt",),
)
_EMBEDDINGS = fields(
    {
        "input": by_type(_TOKENS, {str: None, list: _token_lists(min_items=1, max_items=2048)}),
        "dimensions": integer(1),
        "encoding_format": enum("float", "base64"),
        "user": string,
    },
    required=("input",),
)

# -- Anthropic messages -------------------------------------------------------------------

_TEXT_BLOCK = fields({"text": string}, required=("text",))
_IMAGE_BLOCK = fields(
    {
        "source": tagged(
            "type",
            {
                "base64": fields(
                    {
                        "media_type": enum("image/jpeg", "image/png", "image/gif", "image/webp"),
                        "data": string,
                    },
                    required=("media_type", "data"),
                ),
                "url": fields({"url": string}, required=("url",)),
                "file": fields({"file_id": string}, required=("file_id",)),
            },
        )
    },
    required=("source",),
)
_DOCUMENT_BLOCK = fields({"source": anything}, required=("source",))
_TOOL_RESULT_BLOCK = fields(
    {
        "tool_use_id": string,
        "content": by_type(
            _PARTS,
            {
                str: None,
                list: array(
                    tagged(
                        "type",
                        {
                            "text": _TEXT_BLOCK,
                            "image": _IMAGE_BLOCK,
                            "document": _DOCUMENT_BLOCK,
                            "search_result": anything,
                            "tool_reference": anything,
                            "browser_state": anything,
                        },
                    )
                ),
            },
        ),
        "is_error": boolean,
    },
    required=("tool_use_id",),
)
# Blocks either turn may carry: the gateway reads none of their fields (GA and beta).
_OTHER_BLOCKS = dict.fromkeys(
    (
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "advisor_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "mcp_tool_listing",
        "compaction",
        "tool_addition",
        "tool_removal",
        "fallback",
    ),
    anything,
)
# By role, as the gateway reads them: tool results come from the user's side (policy reads
# them as the tool's words), tool calls and thinking from the assistant's.
_USER_BLOCKS = {
    "text": _TEXT_BLOCK,
    "image": _IMAGE_BLOCK,
    "document": _DOCUMENT_BLOCK,
    "tool_result": _TOOL_RESULT_BLOCK,
    **_OTHER_BLOCKS,
}
_ASSISTANT_BLOCKS = {
    "text": _TEXT_BLOCK,
    "image": _IMAGE_BLOCK,
    "document": _DOCUMENT_BLOCK,
    "tool_use": fields(
        {"id": string, "name": string, "input": anything}, required=("id", "name", "input")
    ),
    "thinking": fields(
        {"thinking": string, "signature": string}, required=("thinking", "signature")
    ),
    "redacted_thinking": fields({"data": string}, required=("data",)),
    **_OTHER_BLOCKS,
}
_BLOCKS = Expected("a string or an array of blocks", "a valid string or a valid list")
_SYSTEM_TEXT = by_type(_BLOCKS, {str: None, list: array(tagged("type", {"text": _TEXT_BLOCK}))})


def _turn(blocks: dict[str, Check]) -> Check:
    content = by_type(_BLOCKS, {str: None, list: array(tagged("type", blocks))})
    return fields({"content": content}, required=("content",))


def _anthropic_tool(value: Any) -> None:
    """A client tool needs a name and an input schema; server tools and toolsets (`type`
    set to anything but "custom") have their own shapes, left to the provider."""
    _TOOL_FIELDS(value)
    if value.get("type") in (None, "custom"):
        for name in ("name", "input_schema"):
            if value.get(name) is None:
                raise missing(name)


_TOOL_FIELDS = fields(
    {"name": string, "description": string, "input_schema": anything, "type": string}
)
_NO_PARALLEL = {"disable_parallel_tool_use": boolean}
_MESSAGES = fields(
    {
        "messages": array(
            tagged(
                "role",
                {
                    "user": _turn(_USER_BLOCKS),
                    "assistant": _turn(_ASSISTANT_BLOCKS),
                    "system": fields({"content": _SYSTEM_TEXT}, required=("content",)),
                },
            ),
            min_items=1,
            max_items=100_000,
        ),
        # 0 is documented: it warms the prompt cache without generating.
        "max_tokens": integer(0),
        "system": _SYSTEM_TEXT,
        "stream": boolean,
        "temperature": number(0, 1),
        "top_p": number(0, 1),
        "top_k": integer(0),
        "stop_sequences": array(string),
        "tools": array(_anthropic_tool),
        "tool_choice": tagged(
            "type",
            {
                "auto": fields(_NO_PARALLEL),
                "any": fields(_NO_PARALLEL),
                "none": anything,
                "tool": fields({"name": string, **_NO_PARALLEL}, required=("name",)),
            },
        ),
        "metadata": fields({"user_id": string}),
        "thinking": tagged(
            "type",
            {
                "enabled": fields({"budget_tokens": integer(1024)}, required=("budget_tokens",)),
                "disabled": anything,
                "adaptive": anything,
            },
        ),
    },
    required=("messages", "max_tokens"),
)

TABLES: dict[Kind, Check] = {
    Kind.CHAT: _CHAT,
    Kind.COMPLETIONS: _COMPLETIONS,
    Kind.EMBEDDINGS: _EMBEDDINGS,
    Kind.MESSAGES: _MESSAGES,
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
    table = TABLES.get(endpoint.kind)
    if table is not None:
        try:
            table(body)
        except Invalid as invalid:
            return error(invalid, endpoint.api)
    return None
