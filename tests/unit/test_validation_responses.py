"""Request validation for the Responses API (`POST /v1/responses`): every field the gateway
reads, as OpenAI's SDK types it; the 400 in OpenAI's words, naming the field."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import typing_extensions
from openai.types.responses import ResponseInputItemParam, ToolParam
from openai.types.responses.response_input_content_param import ResponseInputContentParam

from extproc.apis import ApiError, Endpoint, Kind, Schema, responses_fields
from extproc.apis.checks import MAX_ITEMS
from extproc.apis.validation import validate
from tests.unit.test_translate import DATA
from tests.unit.test_validation import _members, _required

# Served on /v1/responses once the exchange serves the API; validated as it will be.
RESPONSES = Endpoint(Kind.RESPONSES, Schema.OPENAI_RESPONSES, "POST", "/responses")
BASE = {"model": "gpt-5", "input": "hi"}


def check(change: dict[str, Any]) -> ApiError | None:
    return validate(RESPONSES, {**BASE, **change})


def items(*given: Any) -> dict[str, Any]:
    return {"input": list(given)}


def parts(*given: Any) -> dict[str, Any]:
    return items({"role": "user", "content": list(given)})


# (fields set on a valid body, param, code) -- OpenAI's codes and param paths.
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"model": None}, "model", "missing_required_parameter"),
    ({"model": 5}, "model", "invalid_type"),
    ({"input": 5}, "input", "invalid_type"),
    ({"input": {"role": "user"}}, "input", "invalid_type"),
    (items("hi"), "input[0]", "invalid_type"),
    (items({"content": "hi"}), "input[0].role", "missing_required_parameter"),
    (items({"role": "user"}), "input[0].content", "missing_required_parameter"),
    (items({"role": 1, "content": "hi"}), "input[0].role", "invalid_type"),
    (items({"type": 3}), "input[0].type", "invalid_type"),
    (items({"type": "message", "role": "user", "content": 5}), "input[0].content", "invalid_type"),
    (parts({"text": "a"}), "input[0].content[0].type", "missing_required_parameter"),
    (parts({"type": "input_text"}), "input[0].content[0].text", "missing_required_parameter"),
    (parts({"type": "input_text", "text": 1}), "input[0].content[0].text", "invalid_type"),
    (
        parts({"type": "input_image", "image_url": "https://x"}),
        "input[0].content[0].detail",
        "missing_required_parameter",
    ),
    (
        parts({"type": "input_image", "image_url": 5, "detail": "auto"}),
        "input[0].content[0].image_url",
        "invalid_type",
    ),
    (parts({"type": "input_file", "file_id": 5}), "input[0].content[0].file_id", "invalid_type"),
    (
        items({"role": "assistant", "content": [{"type": "output_text"}]}),
        "input[0].content[0].text",
        "missing_required_parameter",
    ),
    (
        items({"role": "assistant", "content": [{"type": "refusal", "refusal": 1}]}),
        "input[0].content[0].refusal",
        "invalid_type",
    ),
    (
        items({"type": "function_call", "name": "f", "arguments": "{}"}),
        "input[0].call_id",
        "missing_required_parameter",
    ),
    (
        items({"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}),
        "input[0].arguments",
        "invalid_type",
    ),
    (
        items({"type": "function_call_output", "call_id": "c"}),
        "input[0].output",
        "missing_required_parameter",
    ),
    (
        items({"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text"}]}),
        "input[0].output[0].text",
        "missing_required_parameter",
    ),
    (
        items({"type": "function_call_output", "call_id": 7, "output": "x"}),
        "input[0].call_id",
        "invalid_type",
    ),
    (items({"type": "reasoning", "id": "rs_1"}), "input[0].summary", "missing_required_parameter"),
    (
        items({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text"}]}),
        "input[0].summary[0].text",
        "missing_required_parameter",
    ),
    (items({"type": "item_reference"}), "input[0].id", "missing_required_parameter"),
    ({"instructions": ["be brief"]}, "instructions", "invalid_type"),
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"max_output_tokens": 0}, "max_output_tokens", "integer_below_min_value"),
    ({"max_output_tokens": "10"}, "max_output_tokens", "invalid_type"),
    ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ({"top_p": -0.1}, "top_p", "decimal_below_min_value"),
    ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    ({"tools": {"type": "function"}}, "tools", "invalid_type"),
    ({"tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
    ({"tools": [{"name": "f"}]}, "tools[0].type", "missing_required_parameter"),
    (
        {"tools": [{"type": "function", "name": "f", "parameters": "{}"}]},
        "tools[0].parameters",
        "invalid_type",
    ),
    (
        {"tools": [{"type": "file_search"}]},
        "tools[0].vector_store_ids",
        "missing_required_parameter",
    ),
    ({"tools": [{"type": "mcp"}]}, "tools[0].server_label", "missing_required_parameter"),
    ({"tool_choice": 1}, "tool_choice", "invalid_type"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.name", "missing_required_parameter"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_type"),
    (
        {"text": {"format": {"type": "json_schema", "schema": {}}}},
        "text.format.name",
        "missing_required_parameter",
    ),
    (
        {"text": {"format": {"type": "json_schema", "name": "a"}}},
        "text.format.schema",
        "missing_required_parameter",
    ),
    ({"text": {"format": "json"}}, "text.format", "invalid_type"),
    ({"reasoning": {"effort": 1}}, "reasoning.effort", "invalid_type"),
    ({"metadata": ["a"]}, "metadata", "invalid_type"),
    ({"store": "true"}, "store", "invalid_type"),
    ({"previous_response_id": 5}, "previous_response_id", "invalid_type"),
    ({"background": 1}, "background", "invalid_type"),
    ({"conversation": 5}, "conversation", "invalid_type"),
    ({"conversation": {}}, "conversation.id", "missing_required_parameter"),
    ({"prompt": {"version": "1"}}, "prompt.id", "missing_required_parameter"),
    ({"include": "reasoning.encrypted_content"}, "include", "invalid_type"),
    ({"user": 5}, "user", "invalid_type"),
    ({"safety_identifier": 5}, "safety_identifier", "invalid_type"),
]


@pytest.mark.parametrize(("change", "param", "code"), REFUSED, ids=[row[1] for row in REFUSED])
def test_fields_refused_with_the_param_named(change: dict[str, Any], param: str, code: str) -> None:
    error = check(change)
    assert error is not None, change
    assert (error.status, error.code, error.param) == (400, code, param), error
    # In OpenAI's envelope, as every OpenAI API's errors.
    assert orjson.loads(error.body(RESPONSES.api)) == {
        "error": {
            "message": error.message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def test_messages_are_openais() -> None:
    error = check({"max_output_tokens": "many"})
    assert error is not None and error.message == (
        "Invalid type for 'max_output_tokens': expected an integer, but got a string instead."
    )
    error = check(items({"type": "function_call_output", "call_id": "c"}))
    assert error is not None and error.message == "Missing required parameter: 'input[0].output'."


ACCEPTED: list[dict[str, Any]] = [
    {},
    {"input": []},
    {"input": None, "previous_response_id": "resp_1"},
    items({"role": "user", "content": "hi"}, {"role": "developer", "content": "Be brief."}),
    # Values the gateway does not know pass: OpenAI adds item, part, role and tool types.
    items({"type": "web_search_call", "id": "ws_1", "status": "completed"}),
    items({"type": "computer_call_output", "call_id": "c", "output": {}}),
    items({"role": "critic", "content": "x"}),
    parts({"type": "input_audio", "input_audio": {}}),
    {
        "tools": [
            {"type": "web_search"},
            {"type": "code_interpreter", "container": {"type": "auto"}},
        ]
    },
    {"tools": [{"type": "image_generation"}, {"type": "a_tool_added_later"}]},
    {"tool_choice": {"type": "web_search_preview"}},
    {
        "tool_choice": {
            "type": "allowed_tools",
            "mode": "auto",
            "tools": [{"type": "function", "name": "f"}],
        }
    },
    {"text": {"format": {"type": "text"}, "verbosity": "low"}},
    {"conversation": "conv_1"},
    {"conversation": {"id": "conv_1"}},
    {"metadata": {f"k{i}": "v" for i in range(20)}},  # OpenAI's to count
    # A function call output by a program's call (no call_id, as the pinned SDK allows).
    items({"type": "function_call_output", "output": "18°C"}),
]


@pytest.mark.parametrize("change", ACCEPTED, ids=range(len(ACCEPTED)))
def test_published_bodies_are_accepted(change: dict[str, Any]) -> None:
    assert check(change) is None


def test_a_whole_conversation_is_accepted() -> None:
    body = orjson.loads((DATA / "translation" / "responses_request.json").read_bytes())
    assert validate(RESPONSES, body) is None


# -- element counts ----------------------------------------------------------------------

HI = {"role": "user", "content": "hi"}
TEXT = {"type": "input_text", "text": "a"}
BOUNDS: list[tuple[Callable[[int], dict[str, Any]], str]] = [
    (lambda n: {"input": [HI] * n}, "input"),
    (lambda n: parts(*[TEXT] * n), "input[0].content"),
    (
        lambda n: items({"type": "function_call_output", "call_id": "c", "output": [TEXT] * n}),
        "input[0].output",
    ),
    (lambda n: {"tools": [{"type": "function", "name": "f"}] * n}, "tools"),
    (lambda n: {"include": ["x"] * n}, "include"),
]


@pytest.mark.parametrize(("fields", "param"), BOUNDS, ids=[row[1] for row in BOUNDS])
def test_arrays_are_bounded(fields: Callable[[int], dict[str, Any]], param: str) -> None:
    # OpenAI publishes no bound on these: MAX_ITEMS, as every such array.
    assert check(fields(MAX_ITEMS)) is None
    error = check(fields(MAX_ITEMS + 1))
    assert error is not None
    assert (error.code, error.param) == ("array_above_max_length", param)


# -- the table against the official SDK's published types ---------------------------------


def _literals(tp: Any) -> list[str]:
    """The string literals of a type (`Literal["a", "b"]`, or an Optional of one)."""
    if typing.get_origin(tp) is typing.Literal:
        return [value for value in typing.get_args(tp) if isinstance(value, str)]
    return [value for arg in typing.get_args(tp) for value in _literals(arg)]


def _by_type(union: Any) -> dict[str, Any]:
    """The TypedDicts of an SDK union by each `type` value they take (the first wins)."""
    found: dict[str, Any] = {}
    for member in _members(union):
        hint = typing_extensions.get_type_hints(member).get("type")
        for value in _literals(hint) if hint is not None else ():
            found.setdefault(value, member)
    return found


def test_item_part_and_tool_types_are_the_sdks() -> None:
    """Every item, content part and tool type the table checks is one the SDK publishes,
    each checked for the fields the SDK requires (but for a function tool's nullable
    `parameters` and `strict`, and a message's type: a null counts as absent)."""
    published_items = _by_type(ResponseInputItemParam)
    assert set(responses_fields.ITEMS) <= set(published_items)
    for name in set(responses_fields.ITEMS) - {"message"}:
        required = _required(published_items[name]) - {"type"}
        error = check(items({"type": name}))
        assert error is not None and error.code == "missing_required_parameter"
        assert error.param in {f"input[0].{field}" for field in required}, (name, required)
    published_parts = _by_type(ResponseInputContentParam)
    assert set(published_parts) <= set(responses_fields.PARTS)
    for name, part in published_parts.items():
        if required := _required(part) - {"type"}:
            error = check(parts({"type": name}))
            assert error is not None
            assert error.param in {f"input[0].content[0].{field}" for field in required}
    tools = _by_type(ToolParam)
    assert set(responses_fields.TOOLS) <= set(tools)
    for name in responses_fields.TOOLS:
        required = _required(tools[name]) - {"type", "parameters", "strict"}
        error = check({"tools": [{"type": name}]})
        assert error is not None and error.param in {f"tools[0].{field}" for field in required}
