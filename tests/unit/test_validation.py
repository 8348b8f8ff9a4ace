"""Request validation: every field the gateway reads, for both front doors, as each
provider's published API types it; the 400 in the client's words, naming the field."""

from __future__ import annotations

import collections.abc
import typing
from collections.abc import Callable
from typing import Any

import pytest
import typing_extensions
from anthropic.types import MessageParam, ToolResultBlockParam
from anthropic.types.beta import BetaMessageParam, BetaToolResultBlockParam
from openai.types.chat import ChatCompletionMessageParam

from extproc.apis import ENDPOINTS, ApiError, anthropic_fields, openai_fields
from extproc.apis.checks import anything
from extproc.apis.validation import validate

CHAT = ENDPOINTS["/v1/chat/completions"]
COMPLETIONS = ENDPOINTS["/v1/completions"]
EMBEDDINGS = ENDPOINTS["/v1/embeddings"]
MESSAGES = ENDPOINTS["/v1/messages"]
BASE = {
    CHAT: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    COMPLETIONS: {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this"},
    EMBEDDINGS: {"model": "text-embedding-3-small", "input": "hello"},
    MESSAGES: {
        "model": "claude-x",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    },
}
PNG = "data:image/png;base64,iVBORw0KGgo="


def user(*parts: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(parts)}]}


def turns(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(messages)}


def check(endpoint: Any, change: dict[str, Any]) -> ApiError | None:
    return validate(endpoint, {**BASE[endpoint], **change})


# (endpoint, fields set on a valid body, param, code) -- OpenAI's codes and param paths.
OPENAI_REFUSED: list[tuple[Any, dict[str, Any], str, str]] = [
    # model (read to route)
    (CHAT, {"model": None}, "model", "missing_required_parameter"),
    (CHAT, {"model": ["gpt"]}, "model", "invalid_type"),
    (CHAT, {"model": "two words"}, "model", "invalid_value"),
    # messages (policy, token estimates, translation)
    (CHAT, {"messages": None}, "messages", "missing_required_parameter"),
    (CHAT, {"messages": "hi"}, "messages", "invalid_type"),
    (CHAT, {"messages": []}, "messages", "empty_array"),
    (CHAT, {"messages": ["hi"]}, "messages[0]", "invalid_type"),
    (CHAT, turns({"content": "hi"}), "messages[0].role", "missing_required_parameter"),
    (CHAT, turns({"role": 1, "content": "hi"}), "messages[0].role", "invalid_type"),
    # a role OpenAI does not publish: the fields the gateway reads, typed as for the others
    (CHAT, turns({"role": "ipython", "content": 5}), "messages[0].content", "invalid_type"),
    (
        CHAT,
        turns({"role": "ipython", "content": [{"type": "text"}]}),
        "messages[0].content[0].text",
        "missing_required_parameter",
    ),
    (
        CHAT,
        turns({"role": "ipython", "content": "x", "tool_calls": [{"type": "function"}]}),
        "messages[0].tool_calls[0].id",
        "missing_required_parameter",
    ),
    (CHAT, turns({"role": "user"}), "messages[0].content", "missing_required_parameter"),
    (CHAT, turns({"role": "user", "content": 5}), "messages[0].content", "invalid_type"),
    (CHAT, turns({"role": "user", "content": {}}), "messages[0].content", "invalid_type"),
    (CHAT, turns({"role": "user", "content": []}), "messages[0].content", "empty_array"),
    (CHAT, user("hi"), "messages[0].content[0]", "invalid_type"),
    (CHAT, user({"text": "hi"}), "messages[0].content[0].type", "missing_required_parameter"),
    (CHAT, user({"type": "text"}), "messages[0].content[0].text", "missing_required_parameter"),
    (CHAT, user({"type": "text", "text": 7}), "messages[0].content[0].text", "invalid_type"),
    (
        CHAT,
        user({"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}),
        "messages[0].content[1].image_url.url",
        "missing_required_parameter",
    ),
    (
        CHAT,
        user({"type": "image_url", "image_url": PNG}),
        "messages[0].content[0].image_url",
        "invalid_type",
    ),
    (
        CHAT,
        user({"type": "input_audio", "input_audio": {"data": "UklGR"}}),
        "messages[0].content[0].input_audio.format",
        "missing_required_parameter",
    ),
    (CHAT, user({"type": "file", "file": "x"}), "messages[0].content[0].file", "invalid_type"),
    # a known part type is checked in any role (which role may carry it is the provider's)
    (
        CHAT,
        turns({"role": "system", "content": [{"type": "image_url", "image_url": {}}]}),
        "messages[0].content[0].image_url.url",
        "missing_required_parameter",
    ),
    (
        CHAT,
        turns({"role": "developer", "content": [{"type": "file", "file": "f"}]}),
        "messages[0].content[0].file",
        "invalid_type",
    ),
    (
        CHAT,
        turns({"role": "user", "content": [{"type": "refusal", "refusal": 1}]}),
        "messages[0].content[0].refusal",
        "invalid_type",
    ),
    (
        CHAT,
        turns({"role": "assistant", "content": [{"type": "refusal"}]}),
        "messages[0].content[0].refusal",
        "missing_required_parameter",
    ),
    (
        CHAT,
        turns({"role": "tool", "content": "42"}),
        "messages[0].tool_call_id",
        "missing_required_parameter",
    ),
    (
        CHAT,
        turns({"role": "tool", "tool_call_id": 1, "content": "42"}),
        "messages[0].tool_call_id",
        "invalid_type",
    ),
    (
        CHAT,
        turns({"role": "tool", "tool_call_id": "c1", "content": [{"type": "image_url"}]}),
        "messages[0].content[0].image_url",
        "missing_required_parameter",
    ),
    (
        CHAT,
        turns({"role": "tool", "tool_call_id": "c1", "content": [{"type": 7}]}),
        "messages[0].content[0].type",
        "invalid_type",
    ),
    (
        CHAT,
        turns({"role": "function", "content": "x"}),
        "messages[0].name",
        "missing_required_parameter",
    ),
    (CHAT, turns({"role": "user", "content": "x", "name": 3}), "messages[0].name", "invalid_type"),
    # assistant tool calls (policy reads their arguments; translation their names)
    (
        CHAT,
        turns({"role": "assistant", "tool_calls": {"id": "c1"}}),
        "messages[0].tool_calls",
        "invalid_type",
    ),
    (
        CHAT,
        turns({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}),
        "messages[0].tool_calls[0].function",
        "missing_required_parameter",
    ),
    (
        CHAT,
        turns(
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
            }
        ),
        "messages[0].tool_calls[0].function.arguments",
        "missing_required_parameter",
    ),
    (
        CHAT,
        turns(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}
                ],
            }
        ),
        "messages[0].tool_calls[0].function.arguments",
        "invalid_type",
    ),
    (
        CHAT,
        turns({"role": "assistant", "tool_calls": [{"id": "c1", "function": {}}]}),
        "messages[0].tool_calls[0].type",
        "missing_required_parameter",
    ),
    # stream and its options (the gateway adds include_usage, the reader strips it)
    (CHAT, {"stream": "yes"}, "stream", "invalid_type"),
    (CHAT, {"stream": 1}, "stream", "invalid_type"),
    (CHAT, {"stream": True, "stream_options": True}, "stream_options", "invalid_type"),
    (
        CHAT,
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
        "invalid_type",
    ),
    # lengths (budgets reserve them, policies cap them, translation carries them)
    (CHAT, {"max_tokens": "abc"}, "max_tokens", "invalid_type"),
    (CHAT, {"max_tokens": [1]}, "max_tokens", "invalid_type"),
    (CHAT, {"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    (CHAT, {"max_tokens": True}, "max_tokens", "invalid_type"),
    (CHAT, {"max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    (CHAT, {"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    (CHAT, {"max_completion_tokens": "9"}, "max_completion_tokens", "invalid_type"),
    (CHAT, {"max_completion_tokens": 0}, "max_completion_tokens", "integer_below_min_value"),
    # sampling (cache keys and translation read n and temperature)
    (CHAT, {"n": "2"}, "n", "invalid_type"),
    (CHAT, {"n": 0}, "n", "integer_below_min_value"),
    (CHAT, {"n": 129}, "n", "integer_above_max_value"),
    (CHAT, {"temperature": "hot"}, "temperature", "invalid_type"),
    (CHAT, {"temperature": -0.1}, "temperature", "decimal_below_min_value"),
    (CHAT, {"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    (CHAT, {"top_p": 1.01}, "top_p", "decimal_above_max_value"),
    (CHAT, {"top_p": False}, "top_p", "invalid_type"),
    (CHAT, {"presence_penalty": -2.5}, "presence_penalty", "decimal_below_min_value"),
    (CHAT, {"frequency_penalty": 3}, "frequency_penalty", "decimal_above_max_value"),
    (CHAT, {"stop": 5}, "stop", "invalid_type"),
    (CHAT, {"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    (CHAT, {"stop": []}, "stop", "empty_array"),
    (CHAT, {"stop": ["a", 1]}, "stop[1]", "invalid_type"),
    (CHAT, {"seed": "42"}, "seed", "invalid_type"),
    (CHAT, {"logprobs": "yes"}, "logprobs", "invalid_type"),
    (CHAT, {"top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    (CHAT, {"user": 12}, "user", "invalid_type"),
    # tools and choices (translated; counted in prompt estimates)
    (CHAT, {"tools": {"type": "function"}}, "tools", "invalid_type"),
    (CHAT, {"tools": [{"function": {"name": "f"}}]}, "tools[0].type", "missing_required_parameter"),
    (CHAT, {"tools": [{"type": "function"}]}, "tools[0].function", "missing_required_parameter"),
    (
        CHAT,
        {"tools": [{"type": "function", "function": {"parameters": {}}}]},
        "tools[0].function.name",
        "missing_required_parameter",
    ),
    (
        CHAT,
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
        "tools[0].function.parameters",
        "invalid_type",
    ),
    (CHAT, {"tool_choice": 1}, "tool_choice", "invalid_type"),
    (
        CHAT,
        {"tool_choice": {"type": "function", "function": {}}},
        "tool_choice.function.name",
        "missing_required_parameter",
    ),
    (CHAT, {"parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_type"),
    (CHAT, {"response_format": {"type": 1}}, "response_format.type", "invalid_type"),
    (
        CHAT,
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "response_format.json_schema.name",
        "missing_required_parameter",
    ),
    # completions
    (COMPLETIONS, {"prompt": None}, "prompt", "missing_required_parameter"),
    (COMPLETIONS, {"prompt": {"text": "x"}}, "prompt", "invalid_type"),
    (COMPLETIONS, {"prompt": ["a", 1]}, "prompt[1]", "invalid_type"),
    (COMPLETIONS, {"prompt": [1, 2.5]}, "prompt[1]", "invalid_type"),
    (COMPLETIONS, {"prompt": [[1, 2], []]}, "prompt[1]", "empty_array"),
    (COMPLETIONS, {"prompt": [[1, "2"]]}, "prompt[0][1]", "invalid_type"),
    (COMPLETIONS, {"max_tokens": -1}, "max_tokens", "integer_below_min_value"),
    (COMPLETIONS, {"n": 0}, "n", "integer_below_min_value"),
    (COMPLETIONS, {"temperature": 3}, "temperature", "decimal_above_max_value"),
    (COMPLETIONS, {"logprobs": 6}, "logprobs", "integer_above_max_value"),
    (COMPLETIONS, {"best_of": "2"}, "best_of", "invalid_type"),
    (COMPLETIONS, {"echo": 1}, "echo", "invalid_type"),
    (COMPLETIONS, {"stream": "true"}, "stream", "invalid_type"),
    (COMPLETIONS, {"stop": [""] * 5}, "stop", "array_above_max_length"),
    # embeddings
    (EMBEDDINGS, {"input": None}, "input", "missing_required_parameter"),
    (EMBEDDINGS, {"input": 5}, "input", "invalid_type"),
    (EMBEDDINGS, {"input": []}, "input", "empty_array"),
    (EMBEDDINGS, {"input": ["a"] * 2049}, "input", "array_above_max_length"),
    (EMBEDDINGS, {"input": ["a", None]}, "input[1]", "invalid_type"),
    (EMBEDDINGS, {"input": [{"text": "a"}]}, "input[0]", "invalid_type"),
    (EMBEDDINGS, {"input": [[1, 2], [3, None]]}, "input[1][1]", "invalid_type"),
    (EMBEDDINGS, {"dimensions": 0}, "dimensions", "integer_below_min_value"),
    (EMBEDDINGS, {"dimensions": "256"}, "dimensions", "invalid_type"),
    (EMBEDDINGS, {"encoding_format": 8}, "encoding_format", "invalid_type"),
    (EMBEDDINGS, {"user": ["u"]}, "user", "invalid_type"),
]


@pytest.mark.parametrize(("endpoint", "change", "param", "code"), OPENAI_REFUSED)
def test_openai_fields_refused_with_the_param_named(
    endpoint: Any, change: dict[str, Any], param: str, code: str
) -> None:
    error = check(endpoint, change)
    assert error is not None, change
    assert (error.status, error.code, error.param) == (400, code, param), error
    body = error.body(endpoint.api)
    assert b'"type":"invalid_request_error"' in body and param.encode() in body


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"max_tokens": "abc"},
            "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
        ),
        (
            {"max_tokens": -5},
            "Invalid 'max_tokens': integer below minimum value. "
            "Expected a value >= 1, but got -5 instead.",
        ),
        (
            {"n": 200},
            "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 200 instead.",
        ),
        (
            {"temperature": 3},
            "Invalid 'temperature': decimal above maximum value. "
            "Expected a value <= 2, but got 3 instead.",
        ),
        (
            {"stop": ["a", "b", "c", "d", "e"]},
            "Invalid 'stop': array too long. Expected an array with maximum length 4, "
            "but got an array with length 5 instead.",
        ),
        (
            {"messages": []},
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
        ),
        (
            turns({"role": "user", "content": {"type": "text"}}),
            "Invalid type for 'messages[0].content': expected one of a string or array of "
            "objects, but got an object instead.",
        ),
        (
            user({"type": "text", "text": "a"}, {"type": 3}),
            "Invalid type for 'messages[0].content[1].type': expected a string, "
            "but got an integer instead.",
        ),
        (turns({"role": "user"}), "Missing required parameter: 'messages[0].content'."),
        ({"model": None}, "You must provide a model parameter."),
        (
            {"max_tokens": 2.0},
            "Invalid type for 'max_tokens': expected an integer, but got a decimal number instead.",
        ),
    ],
)
def test_openai_messages_are_openais(change: dict[str, Any], message: str) -> None:
    error = check(CHAT, change)
    assert error is not None and error.message == message


# (fields set on a valid Messages body, the message Anthropic's schema gets: `path: why`)
ANTHROPIC_REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"model": None}, "model: Field required"),
    ({"model": 3}, "model: Input should be a valid string"),
    ({"max_tokens": None}, "max_tokens: Field required"),
    ({"max_tokens": "abc"}, "max_tokens: Input should be a valid integer"),
    ({"max_tokens": [1]}, "max_tokens: Input should be a valid integer"),
    ({"max_tokens": -5}, "max_tokens: Input should be greater than or equal to 0"),
    ({"messages": None}, "messages: Field required"),
    ({"messages": {"role": "user"}}, "messages: Input should be a valid list"),
    ({"messages": []}, "messages: List should have at least 1 item after validation, not 0"),
    (turns({"content": "hi"}), "messages.0.role: Field required"),
    # a role Anthropic does not publish: its content is typed as the others'
    (
        turns({"role": "tool", "content": 1}),
        "messages.0.content: Input should be a valid string or a valid list",
    ),
    (turns({"role": "user"}), "messages.0.content: Field required"),
    (
        turns({"role": "user", "content": 1}),
        "messages.0.content: Input should be a valid string or a valid list",
    ),
    (
        turns({"role": "user", "content": ["hi"]}),
        "messages.0.content.0: Input should be a valid dictionary",
    ),
    (
        turns({"role": "user", "content": [{"text": "hi"}]}),
        "messages.0.content.0.type: Field required",
    ),
    (
        turns({"role": "user", "content": [{"type": "text"}]}),
        "messages.0.content.0.text: Field required",
    ),
    (
        turns({"role": "user", "content": [{"type": "text", "text": None}]}),
        "messages.0.content.0.text: Field required",
    ),
    (
        turns({"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}),
        "messages.0.content.0.source.media_type: Field required",
    ),
    (
        turns(
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": 1, "data": "Q"}}
                ],
            }
        ),
        "messages.0.content.0.source.media_type: Input should be a valid string",
    ),
    (
        turns({"role": "user", "content": [{"type": "document"}]}),
        "messages.0.content.0.source: Field required",
    ),
    # a known block type is checked in any turn (which turn may carry it is the provider's)
    (
        turns(
            {
                "role": "system",
                "content": [{"type": "image", "source": {"type": "url"}}],
            }
        ),
        "messages.0.content.0.source.url: Field required",
    ),
    (
        turns({"role": "user", "content": [{"type": "thinking", "thinking": "t"}]}),
        "messages.0.content.0.signature: Field required",
    ),
    (
        turns({"role": "user", "content": [{"type": 5}]}),
        "messages.0.content.0.type: Input should be a valid string",
    ),
    # the text a policy reads in documents, search results and MCP tool results
    (
        turns({"role": "user", "content": [{"type": "document", "source": {"type": "text"}}]}),
        "messages.0.content.0.source.data: Field required",
    ),
    (
        turns(
            {
                "role": "user",
                "content": [{"type": "document", "source": {"type": "content", "content": 3}}],
            }
        ),
        "messages.0.content.0.source.content: Input should be a valid string or a valid list",
    ),
    (
        turns(
            {
                "role": "user",
                "content": [{"type": "search_result", "source": "s", "title": "t", "content": "x"}],
            }
        ),
        "messages.0.content.0.content: Input should be a valid list",
    ),
    (
        turns({"role": "assistant", "content": [{"type": "mcp_tool_result", "content": "x"}]}),
        "messages.0.content.0.tool_use_id: Field required",
    ),
    (
        turns({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}),
        "messages.0.content.0.input: Field required",
    ),
    (
        turns(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}],
            }
        ),
        "messages.0.content.0.input: Input should be a valid dictionary",
    ),
    (
        turns({"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]}),
        "messages.0.content.0.signature: Field required",
    ),
    (
        turns({"role": "user", "content": [{"type": "tool_result"}]}),
        "messages.0.content.0.tool_use_id: Field required",
    ),
    (
        turns(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 4}]}
        ),
        "messages.0.content.0.content: Input should be a valid string or a valid list",
    ),
    (
        turns(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}
                ],
            }
        ),
        "messages.0.content.0.content.0.text: Field required",
    ),
    (
        turns(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "no"}],
            }
        ),
        "messages.0.content.0.is_error: Input should be a valid boolean",
    ),
    # top-level fields
    ({"system": 5}, "system: Input should be a valid string or a valid list"),
    ({"system": [{"type": "text"}]}, "system.0.text: Field required"),
    ({"system": [{"type": "text", "text": 1}]}, "system.0.text: Input should be a valid string"),
    ({"stream": "yes"}, "stream: Input should be a valid boolean"),
    ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
    ({"temperature": -1}, "temperature: Input should be greater than or equal to 0"),
    ({"temperature": "warm"}, "temperature: Input should be a valid number"),
    ({"top_p": 2}, "top_p: Input should be less than or equal to 1"),
    ({"top_k": -1}, "top_k: Input should be greater than or equal to 0"),
    ({"top_k": 0.5}, "top_k: Input should be a valid integer"),
    ({"stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
    ({"stop_sequences": ["END", 1]}, "stop_sequences.1: Input should be a valid string"),
    ({"tools": {"name": "f"}}, "tools: Input should be a valid list"),
    ({"tools": [{"input_schema": {}}]}, "tools.0.name: Field required"),
    ({"tools": [{"name": "f"}]}, "tools.0.input_schema: Field required"),
    (
        {"tools": [{"name": "f", "input_schema": "{}"}]},
        "tools.0.input_schema: Input should be a valid dictionary",
    ),
    (
        {"tools": [{"name": 1, "type": "web_search_20250305"}]},
        "tools.0.name: Input should be a valid string",
    ),
    ({"tool_choice": "auto"}, "tool_choice: Input should be a valid dictionary"),
    ({"tool_choice": {"name": "f"}}, "tool_choice.type: Field required"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name: Field required"),
    (
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": "yes"}},
        "tool_choice.disable_parallel_tool_use: Input should be a valid boolean",
    ),
    ({"metadata": {"user_id": 7}}, "metadata.user_id: Input should be a valid string"),
    ({"metadata": "u"}, "metadata: Input should be a valid dictionary"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens: Field required"),
    (
        {"thinking": {"type": "enabled", "budget_tokens": 100}},
        "thinking.budget_tokens: Input should be greater than or equal to 1024",
    ),
    ({"thinking": {"budget_tokens": 2048}}, "thinking.type: Field required"),
]


@pytest.mark.parametrize(("change", "message"), ANTHROPIC_REFUSED)
def test_anthropic_fields_refused_in_anthropics_words(change: dict[str, Any], message: str) -> None:
    error = check(MESSAGES, change)
    assert error is not None, change
    assert error.status == 400 and error.message.startswith(message), error.message
    body = error.body(MESSAGES.api)
    assert body.startswith(b'{"type":"error","error":{"type":"invalid_request_error"')


TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
# Bodies every provider accepts: boundaries, every part and block type, nulls for optional
# fields, and fields the tables do not know (left to the provider).
ACCEPTED: list[tuple[Any, dict[str, Any]]] = [
    (CHAT, {"max_tokens": 1, "max_completion_tokens": 1, "n": 128, "temperature": 2, "top_p": 0}),
    (CHAT, {"temperature": 0, "presence_penalty": -2, "frequency_penalty": 2.0, "top_logprobs": 0}),
    (
        CHAT,
        {"stop": "END", "seed": -3, "user": "u", "logprobs": True, "parallel_tool_calls": False},
    ),
    (CHAT, {"stop": ["a", "b", "c", "d"], "stream": False, "stream_options": None}),
    (
        CHAT,
        {"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}},
    ),
    (CHAT, {"max_tokens": None, "n": None, "temperature": None, "tools": None, "stop": None}),
    (CHAT, {"brand_new_field": {"anything": [1, "x"]}, "metadata": {"k": "v"}}),
    (
        CHAT,
        user(
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-1"}},
            {"type": "text", "text": "new part field", "cache_hint": 1},
        ),
    ),
    (
        CHAT,
        turns(
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "system", "content": "be kind", "name": "ops"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sun"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "function", "name": "f", "content": None},
        ),
    ),
    (
        CHAT,
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
                {"type": "custom", "custom": {"name": "grammar"}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
        },
    ),
    (CHAT, {"tool_choice": "required", "response_format": {"type": "json_object"}}),
    (CHAT, {"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto"}}}),
    (
        COMPLETIONS,
        {"prompt": ["a", "b"], "max_tokens": 0, "logprobs": 5, "best_of": 20, "echo": True},
    ),
    (COMPLETIONS, {"prompt": [1, 2, 3], "suffix": "end", "stream": True}),
    (COMPLETIONS, {"prompt": [[1, 2], [3]]}),
    (COMPLETIONS, {"prompt": []}),
    (EMBEDDINGS, {"input": ["a"] * 2048, "dimensions": 1, "encoding_format": "base64"}),
    (EMBEDDINGS, {"input": [1, 2, 3], "encoding_format": "float", "user": "u"}),
    (EMBEDDINGS, {"input": [[1, 2], [3, 4, 5]]}),
    (MESSAGES, {"max_tokens": 0, "temperature": 1, "top_p": 0.0, "top_k": 0, "stop_sequences": []}),
    (MESSAGES, {"system": "be brief", "stream": True, "metadata": {"user_id": None}}),
    (
        MESSAGES,
        {"system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]},
    ),
    (MESSAGES, {"temperature": None, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    (MESSAGES, {"thinking": {"type": "adaptive"}, "service_tier": "auto", "brand_new": [1]}),
    (
        MESSAGES,
        {
            "tools": [
                {"name": "f", "input_schema": {"type": "object"}, "description": "d"},
                {"type": "custom", "name": "g", "input_schema": {}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                {"type": "mcp_toolset", "mcp_server_name": "docs"},
            ],
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        },
    ),
    (MESSAGES, {"tool_choice": {"type": "none"}}),
    (
        MESSAGES,
        turns(
            {"role": "system", "content": [{"type": "text", "text": "rules"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "see"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {"type": "document", "source": {"type": "text", "data": "doc"}},
                    {"type": "search_result", "source": "s", "title": "t", "content": []},
                    {"type": "container_upload", "file_id": "f"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xx"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": 1}},
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                    {"type": "web_search_tool_result", "tool_use_id": "s1", "content": []},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "42",
                        "is_error": False,
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "42"}],
                    },
                    {"type": "mcp_tool_result", "tool_use_id": "m1"},
                ],
            },
        ),
    ),
]


# Values the tables do not know pass to the provider: parts, blocks, roles and types that
# OpenAI-compatible servers and newer API versions take, and known types in any role.
EXTENSIONS: list[tuple[Any, dict[str, Any]]] = [
    (
        CHAT,
        user(
            {"type": "text", "text": "describe"},
            {"type": "video_url", "video_url": {"url": "https://x.test/a.mp4"}},
            {"type": "audio_url", "audio_url": {"url": "https://x.test/a.wav"}},
            {"type": "input_text", "text": 5},
        ),
    ),
    (CHAT, turns({"role": "ipython", "content": [{"type": "text", "text": "42"}]})),
    (
        CHAT,
        turns({"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}),
    ),
    (CHAT, turns({"role": "user", "content": [{"type": "refusal", "refusal": "no"}]})),
    (CHAT, turns({"role": "assistant", "tool_calls": [{"id": "c1", "type": "web", "web": 1}]})),
    (
        CHAT,
        {
            "tools": [{"type": "retrieval"}],
            "tool_choice": "any",
            "response_format": {"type": "structural_tag", "structures": []},
        },
    ),
    (EMBEDDINGS, {"encoding_format": "bytes"}),
    (
        MESSAGES,
        turns(
            {"role": "user", "content": [{"type": "video", "source": {"type": "url"}}]},
            {"role": "tool", "content": "42"},
            {
                "role": "user",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "ftp", "path": "/a.png"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="},
                    },
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "video"}]},
                ],
            },
        ),
    ),
    (
        MESSAGES,
        {
            "thinking": {"type": "on"},
            "tool_choice": {"type": "required"},
            "system": [{"type": "x"}],
        },
    ),
]


@pytest.mark.parametrize(("endpoint", "change"), ACCEPTED + EXTENSIONS)
def test_published_bodies_are_accepted(endpoint: Any, change: dict[str, Any]) -> None:
    assert check(endpoint, change) is None


# -- element counts ----------------------------------------------------------------------

HI = {"role": "user", "content": "hi"}
A = {"type": "text", "text": "a"}
CHAT_TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}
# (endpoint, the body's fields with n elements, the bound, where the 400 points). Bounds
# the provider publishes, or MAX_ITEMS / MAX_TOKEN_IDS where it publishes none (docs: errors).
BOUNDS: list[tuple[Any, Callable[[int], dict[str, Any]], int, str]] = [
    (CHAT, lambda n: {"messages": [HI] * n}, 100_000, "messages"),
    (CHAT, lambda n: user(*[A] * n), 100_000, "messages[0].content"),
    (
        CHAT,
        lambda n: turns({"role": "assistant", "tool_calls": [TOOL_CALL] * n}),
        128,
        "messages[0].tool_calls",
    ),
    (CHAT, lambda n: {"tools": [CHAT_TOOL] * n}, 128, "tools"),
    (CHAT, lambda n: {"stop": ["x"] * n}, 4, "stop"),
    (COMPLETIONS, lambda n: {"prompt": ["a"] * n}, 100_000, "prompt"),
    (COMPLETIONS, lambda n: {"prompt": [[1]] * n}, 100_000, "prompt"),
    (COMPLETIONS, lambda n: {"prompt": [7] * n}, 10_000_000, "prompt"),
    (COMPLETIONS, lambda n: {"prompt": [[1], [7] * n]}, 10_000_000, "prompt[1]"),
    (EMBEDDINGS, lambda n: {"input": ["a"] * n}, 2048, "input"),
    (EMBEDDINGS, lambda n: {"input": [7] * n}, 2048, "input"),
    (EMBEDDINGS, lambda n: {"input": [[1]] * n}, 2048, "input"),
    (EMBEDDINGS, lambda n: {"input": [[7] * n]}, 10_000_000, "input[0]"),
    (MESSAGES, lambda n: {"messages": [HI] * n}, 100_000, "messages"),
    (MESSAGES, lambda n: user(*[A] * n), 100_000, "messages.0.content"),
    (MESSAGES, lambda n: {"system": [A] * n}, 100_000, "system"),
    (
        MESSAGES,
        lambda n: user({"type": "tool_result", "tool_use_id": "t", "content": [A] * n}),
        100_000,
        "messages.0.content.0.content",
    ),
    (
        MESSAGES,
        lambda n: {"tools": [{"name": "f", "input_schema": {}}] * n},
        10_000,
        "tools",
    ),
    (MESSAGES, lambda n: {"stop_sequences": ["x"] * n}, 100_000, "stop_sequences"),
]


@pytest.mark.parametrize(("endpoint", "fields", "bound", "param"), BOUNDS)
def test_arrays_are_bounded_as_published(
    endpoint: Any, fields: Callable[[int], dict[str, Any]], bound: int, param: str
) -> None:
    assert check(endpoint, fields(bound)) is None
    error = check(endpoint, fields(bound + 1))
    assert error is not None
    assert (error.status, error.code, error.param) == (400, "array_above_max_length", param)
    assert str(bound) in error.message and str(bound + 1) in error.message


def test_an_object_of_many_unknown_keys_is_checked_by_its_table() -> None:
    """Past a few keys more than its table names, an object's known keys are looked up
    in it (what it costs is the table's, not the client's key count); nothing changes
    in what is refused."""
    extra = {f"x{i}": i for i in range(200_000)}
    assert check(CHAT, extra) is None
    error = check(CHAT, {**extra, "max_tokens": "many"})
    assert error is not None and (error.code, error.param) == ("invalid_type", "max_tokens")
    part = {**{f"x{i}": i for i in range(100)}, "type": "text", "text": 5}
    error = check(CHAT, user(part))
    assert error is not None and error.param == "messages[0].content[0].text"


# -- the tables against the official SDKs' published types --------------------------------


def _members(tp: Any) -> list[Any]:
    """The TypedDicts of a union (or an iterable of one), as the SDKs type content."""
    if typing_extensions.is_typeddict(tp):
        return [tp]
    found: list[Any] = []
    if typing.get_origin(tp) in (typing.Union, collections.abc.Iterable):
        for arg in typing.get_args(tp):
            found += _members(arg)
    return found


def _tag(tp: Any, key: str) -> str:
    (value,) = typing.get_args(typing_extensions.get_type_hints(tp)[key])
    return str(value)


def _by_tag(union: Any, key: str) -> dict[str, Any]:
    return {_tag(member, key): member for member in _members(union)}


def _required(tp: Any) -> set[str]:
    hints = typing_extensions.get_type_hints(tp, include_extras=True)
    return {k for k, v in hints.items() if typing.get_origin(v) is typing_extensions.Required}


def _content(message: Any) -> dict[str, Any]:
    return _by_tag(typing_extensions.get_type_hints(message)["content"], "type")


def _refuses_each_missing(endpoint: Any, body: dict[str, Any], at: str, required: set[str]) -> None:
    """A body missing the SDK's required fields is refused, naming one of them."""
    error = validate(endpoint, {**BASE[endpoint], **body})
    assert error is not None and error.code == "missing_required_parameter", body
    assert error.param in {f"{at}{name}" for name in required}, (error.param, required)


def test_openai_roles_and_part_types_are_the_sdks() -> None:
    """Every role and part type the SDK publishes is in the tables, each checked for the
    fields the SDK requires; nothing else is (others pass to the provider)."""
    roles = _by_tag(ChatCompletionMessageParam, "role")
    parts: dict[str, Any] = {}
    for message in roles.values():
        if message is not roles["function"]:  # its content is a string
            parts |= _content(message)
    assert set(openai_fields.ROLES) == set(roles)
    assert set(openai_fields.PARTS) == set(parts)
    for name, message in roles.items():
        if required := _required(message) - {"role"}:
            _refuses_each_missing(CHAT, turns({"role": name}), "messages[0].", required)
    for name, part in parts.items():
        _refuses_each_missing(
            CHAT, user({"type": name}), "messages[0].content[0].", _required(part) - {"type"}
        )


def test_anthropic_roles_and_block_types_are_the_sdks() -> None:
    """The SDK's roles and block types (GA and beta, any turn) are the table's; those the
    gateway reads are checked for the fields the SDK requires."""
    published: dict[str, Any] = {}
    roles: set[str] = set()
    results: set[str] = set()
    for union in (MessageParam, BetaMessageParam):
        roles |= set(_by_tag(union, "role"))
        for message in _members(union):
            published |= _content(message)
    for block in (ToolResultBlockParam, BetaToolResultBlockParam):
        results |= set(_content(block))
    assert set(anthropic_fields.ROLES) == roles
    assert set(anthropic_fields.BLOCKS) == set(published)
    assert set(anthropic_fields.RESULT_BLOCKS) == results
    read = {name for name, check in anthropic_fields.BLOCKS.items() if check is not anything}
    assert read == {
        "text",
        "image",
        "document",
        "search_result",
        "tool_result",
        "mcp_tool_result",
        "tool_use",
        "thinking",
        "redacted_thinking",
    }
    for name in read:
        body = turns({"role": "user", "content": [{"type": name}]})
        required = _required(published[name]) - {"type"}
        _refuses_each_missing(MESSAGES, body, "messages.0.content.0.", required)
