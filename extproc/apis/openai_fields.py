"""The fields of OpenAI's request bodies the gateway checks: chat completions, completions,
embeddings, with the types and ranges of OpenAI's OpenAPI spec
(github.com/openai/openai-openapi: `CreateChatCompletionRequest`, `CreateCompletionRequest`,
`CreateEmbeddingRequest`)."""

from __future__ import annotations

from typing import Any

from extproc.apis.checks import (
    ARRAY,
    INTEGER,
    MAX_ITEMS,
    STRING,
    Check,
    Expected,
    Invalid,
    Problem,
    anything,
    array,
    boolean,
    by_type,
    fields,
    integer,
    number,
    string,
    tagged,
)

_PARTS = Expected("one of a string or array of objects", "a valid string or a valid list")
_STRINGS = Expected("one of a string or array of strings", "a valid string or a valid list")
_TOKENS = Expected(
    "one of a string, array of strings, array of integers or array of arrays of integers",
    "a valid string or a valid list",
)


def _all_ints(values: list[Any]) -> bool:
    """Whether every element is an integer, at C speed: a sum of integers is an integer, a
    float makes it a float and anything else raises. (A boolean passes as 1; the provider
    refuses it.) A Python loop over millions of token ids would cost as much as parsing."""
    try:
        return type(sum(values)) is int
    except TypeError:
        return False


# Token ids in one prompt or input: OpenAI publishes no bound for completions (its
# embeddings take 2,048 ids, or arrays of them); no model's context window holds more
# than 10M (the longest published, Llama 4 Scout's), so no real prompt has more.
MAX_TOKEN_IDS = 10_000_000


def _token_lists(*, min_items: int, max_items: int, max_ids: int) -> Check:
    """An array of at most `max_items` strings or non-empty arrays of token ids (each at
    most MAX_TOKEN_IDS), or of at most `max_ids` token ids (prompts and embedding inputs)."""

    def check(value: list[Any]) -> None:
        if len(value) < min_items:
            raise Invalid(Problem.EMPTY, value, min_items)
        if not value:
            return
        first = type(value[0])
        bound = max_ids if first is int else max_items
        if len(value) > bound:
            raise Invalid(Problem.TOO_LONG, len(value), bound)
        if first is int and _all_ints(value):
            return
        if first is str and set(map(type, value)) == {str}:
            return
        if first is list and set(map(type, value)) == {list}:
            for index, ids in enumerate(value):
                if ids and len(ids) <= MAX_TOKEN_IDS and _all_ints(ids):
                    continue
                if len(ids) > MAX_TOKEN_IDS:
                    invalid = Invalid(Problem.TOO_LONG, len(ids), MAX_TOKEN_IDS)
                else:
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
# OpenAI's API answers more than 128 tools, or tool calls in one message, with
# `array_above_max_length`.
_MAX_TOOLS = 128
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
# Content parts by type, wherever they appear: which roles may carry which is the
# provider's to say (OpenAI takes only text from system, developer and tool messages;
# vLLM takes any part in any role). Other types pass unchecked: OpenAI-compatible servers
# add their own (vLLM's `video_url`, `audio_url`, ...).
PARTS: dict[str, Check] = {
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
    "refusal": fields({"refusal": string}, required=("refusal",)),
}
_CONTENT = by_type(_PARTS, {str: None, list: array(tagged("type", PARTS), min_items=1)})


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
_TOOL_CALLS = array(_TOOL_CALL, max_items=_MAX_TOOLS)
_SYSTEM = fields({"content": _CONTENT, "name": string}, required=("content",))
ROLES: dict[str, Check] = {
    "system": _SYSTEM,
    "developer": _SYSTEM,
    "user": fields({"content": _CONTENT, "name": string}, required=("content",)),
    "assistant": fields(
        {"content": _CONTENT, "refusal": string, "name": string, "tool_calls": _TOOL_CALLS}
    ),
    "tool": fields(
        {"content": _CONTENT, "tool_call_id": string}, required=("content", "tool_call_id")
    ),
    "function": fields({"content": string, "name": string}, required=("name",)),
}
# A role OpenAI does not publish (vLLM takes any): the fields the gateway reads, typed as
# the published roles type them.
_OTHER_ROLE = fields(
    {"content": _CONTENT, "name": string, "tool_call_id": string, "tool_calls": _TOOL_CALLS}
)
_CHAT_MESSAGE = tagged("role", ROLES, other=_OTHER_ROLE)
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
        str: None,
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
CHAT = fields(
    {
        # No published bound: MAX_ITEMS, as Anthropic's.
        "messages": array(_CHAT_MESSAGE, min_items=1),
        **_SAMPLING,
        # The spec gives no minimum; the API answers 0 with `integer_below_min_value`.
        "max_tokens": integer(1),
        "max_completion_tokens": integer(1),
        "logprobs": boolean,
        "top_logprobs": integer(0, 20),
        "tools": array(_CHAT_TOOL, max_items=_MAX_TOOLS),
        "tool_choice": _CHAT_TOOL_CHOICE,
        "parallel_tool_calls": boolean,
        "response_format": _RESPONSE_FORMAT,
    },
    required=("messages",),
)

# -- OpenAI completions and embeddings ----------------------------------------------------

COMPLETIONS = fields(
    {
        "prompt": by_type(
            _TOKENS,
            {
                str: None,
                list: _token_lists(min_items=0, max_items=MAX_ITEMS, max_ids=MAX_TOKEN_IDS),
            },
        ),
        **_SAMPLING,
        "max_tokens": integer(0),
        "logprobs": integer(0, 5),
        "best_of": integer(0, 20),
        "echo": boolean,
        "suffix": string,
    },
    required=("prompt",),
)
EMBEDDINGS = fields(
    {
        # The spec's bound, for strings, token ids and arrays of them alike.
        "input": by_type(
            _TOKENS, {str: None, list: _token_lists(min_items=1, max_items=2048, max_ids=2048)}
        ),
        "dimensions": integer(1),
        "encoding_format": string,
        "user": string,
    },
    required=("input",),
)
