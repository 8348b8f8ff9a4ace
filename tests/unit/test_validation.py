"""Request validation: every field the gateway reads, for both front doors, as each
provider's published API types it; the 400 in the client's words, naming the field."""

from __future__ import annotations

import collections.abc
import typing
from typing import Any

import pytest
import typing_extensions
from anthropic.types import MessageParam
from anthropic.types.beta import BetaMessageParam
from openai.types.chat import ChatCompletionMessageParam

from extproc.apis import ENDPOINTS, ApiError
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
    (CHAT, turns({"role": "human", "content": "hi"}), "messages[0].role", "invalid_value"),
    (CHAT, turns({"role": "user"}), "messages[0].content", "missing_required_parameter"),
    (CHAT, turns({"role": "user", "content": 5}), "messages[0].content", "invalid_type"),
    (CHAT, turns({"role": "user", "content": {}}), "messages[0].content", "invalid_type"),
    (CHAT, turns({"role": "user", "content": []}), "messages[0].content", "empty_array"),
    (CHAT, user("hi"), "messages[0].content[0]", "invalid_type"),
    (CHAT, user({"text": "hi"}), "messages[0].content[0].type", "missing_required_parameter"),
    (CHAT, user({"type": "image", "url": PNG}), "messages[0].content[0].type", "invalid_value"),
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
    (
        CHAT,
        user({"type": "refusal", "refusal": "no"}),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    # content part types by role
    (
        CHAT,
        turns({"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        CHAT,
        turns({"role": "developer", "content": [{"type": "file", "file": {}}]}),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        CHAT,
        turns({"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}),
        "messages[0].content[0].type",
        "invalid_value",
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
        "messages[0].content[0].type",
        "invalid_value",
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
        turns({"role": "assistant", "tool_calls": [{"id": "c1", "type": "web", "web": {}}]}),
        "messages[0].tool_calls[0].type",
        "invalid_value",
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
    (CHAT, {"tools": [{"type": "retrieval"}]}, "tools[0].type", "invalid_value"),
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
    (CHAT, {"tool_choice": "any"}, "tool_choice", "invalid_value"),
    (CHAT, {"tool_choice": 1}, "tool_choice", "invalid_type"),
    (
        CHAT,
        {"tool_choice": {"type": "function", "function": {}}},
        "tool_choice.function.name",
        "missing_required_parameter",
    ),
    (CHAT, {"parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_type"),
    (CHAT, {"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value"),
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
    (EMBEDDINGS, {"encoding_format": "int8"}, "encoding_format", "invalid_value"),
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
            user({"type": "text", "text": "a"}, {"type": "image", "url": PNG}),
            "Invalid value: 'image'. Supported values are: "
            "'text', 'image_url', 'input_audio', and 'file'.",
        ),
        (
            turns({"role": "system", "content": [{"type": "image_url"}]}),
            "Invalid value: 'image_url'. Supported values are: 'text'.",
        ),
        (
            turns({"role": "human", "content": "hi"}),
            "Invalid value: 'human'. Supported values are: 'system', 'developer', 'user', "
            "'assistant', 'tool', and 'function'.",
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
    (
        turns({"role": "tool", "content": "hi"}),
        "messages.0: Input tag 'tool' found using 'role' does not match any of the expected "
        "tags: 'user', 'assistant', 'system'",
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
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="},
                    }
                ],
            }
        ),
        "messages.0.content.0.source.media_type: Input should be 'image/jpeg', 'image/png', "
        "'image/gif' or 'image/webp'",
    ),
    (
        turns({"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}),
        "messages.0.content.0.source: Input tag 'ftp' found using 'type' does not match any of "
        "the expected tags: 'base64', 'url', 'file'",
    ),
    (
        turns({"role": "user", "content": [{"type": "document"}]}),
        "messages.0.content.0.source: Field required",
    ),
    # block types by role
    (
        turns(
            {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
        ),
        "messages.0.content.0: Input tag 'tool_use' found using 'type' does not match any of "
        "the expected tags: ",
    ),
    (
        turns(
            {"role": "user", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]}
        ),
        "messages.0.content.0: Input tag 'thinking'",
    ),
    (
        turns({"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}),
        "messages.0.content.0: Input tag 'tool_result'",
    ),
    (
        turns(
            {
                "role": "system",
                "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
            }
        ),
        "messages.0.content.0: Input tag 'image' found using 'type' does not match any of the "
        "expected tags: 'text'",
    ),
    (
        turns({"role": "user", "content": [{"type": "video"}]}),
        "messages.0.content.0: Input tag 'video'",
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
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "tool_use"}]}
                ],
            }
        ),
        "messages.0.content.0.content.0: Input tag 'tool_use'",
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
    ({"system": [{"type": "image"}]}, "system.0: Input tag 'image'"),
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
    (
        {"tool_choice": {"type": "required"}},
        "tool_choice: Input tag 'required' found using 'type' does not match any of the "
        "expected tags: 'auto', 'any', 'none', 'tool'",
    ),
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
    ({"thinking": {"type": "on"}}, "thinking: Input tag 'on'"),
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


@pytest.mark.parametrize(("endpoint", "change"), ACCEPTED)
def test_published_bodies_are_accepted(endpoint: Any, change: dict[str, Any]) -> None:
    assert check(endpoint, change) is None


def test_a_long_echoed_value_is_cut_short() -> None:
    error = check(CHAT, turns({"role": "x" * 100_000, "content": "hi"}))
    assert error is not None and len(error.message) < 300


# -- the tables against the official SDKs' published types --------------------------------


def _literals(tp: Any, key: str) -> set[str]:
    """Every value of `key` (role, type) the union of TypedDicts `tp` allows."""
    if typing_extensions.is_typeddict(tp):
        hint = typing_extensions.get_type_hints(tp).get(key)
        return {str(v) for v in typing.get_args(hint)}
    found: set[str] = set()
    if typing.get_origin(tp) in (typing.Union, collections.abc.Iterable):
        for arg in typing.get_args(tp):
            found |= _literals(arg, key)
    return found


def _content_types(message: Any) -> set[str]:
    return _literals(typing.get_type_hints(message)["content"], "type")


def _refused_tag(endpoint: Any, body: dict[str, Any]) -> set[str]:
    """The tags the validator lists when refusing an unknown one."""
    error = validate(endpoint, body)
    assert error is not None
    listed = error.message.split("expected tags: ")[-1].split("Supported values are: ")[-1]
    return {
        t.strip(" '.") for t in listed.replace(", and ", ", ").replace(" and ", ", ").split(",")
    }


def test_openai_roles_and_part_types_are_the_sdks() -> None:
    roles = {}
    for message in typing.get_args(ChatCompletionMessageParam):
        (role,) = _literals(message, "role")
        roles[role] = _content_types(message)
    refused = _refused_tag(CHAT, {**BASE[CHAT], **turns({"role": "?", "content": "x"})})
    assert refused == set(roles)
    assert roles.pop("function") == set()  # its content is a string
    for role, types in roles.items():
        message = {"role": role, "content": [{"type": "?"}], "tool_call_id": "c1"}
        assert _refused_tag(CHAT, {**BASE[CHAT], **turns(message)}) == types, role


def test_anthropic_roles_and_block_types_are_the_sdks() -> None:
    """The blocks either turn may hold are the SDK's (GA and beta) less those the gateway
    reads as the other side's: tool results only from the user, tool calls and thinking
    only from the assistant."""
    published: set[str] = set()
    roles: set[str] = set()
    for union in (MessageParam, BetaMessageParam):
        for message in typing.get_args(union):
            roles |= _literals(message, "role")
            if _literals(message, "role") != {"system"}:
                published |= _content_types(message)
    refused = _refused_tag(MESSAGES, {**BASE[MESSAGES], **turns({"role": "?", "content": "x"})})
    assert refused == roles
    blocks = {
        role: _refused_tag(
            MESSAGES, {**BASE[MESSAGES], **turns({"role": role, "content": [{"type": "?"}]})}
        )
        for role in ("user", "assistant")
    }
    assert blocks["user"] == published - {"tool_use", "thinking", "redacted_thinking"}
    assert blocks["assistant"] == published - {"tool_result"}
