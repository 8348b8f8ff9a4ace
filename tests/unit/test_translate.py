"""Translation through the hub for every ordered pair of APIs (client, backend), from each
provider's documented request and response formats and errors (streams: in
test_translate_streams.py). Each table row is one pair; an API added to the hub adds its
rows."""

from __future__ import annotations

import copy
import itertools
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.apis import Schema
from extproc.translate import (
    anthropic_messages,
    anthropic_messages_stream,
    openai_chat,
    openai_chat_stream,
    openai_responses,
)
from extproc.translate.hub import Untranslatable
from extproc.translate.translation import CODECS, Translation

DATA = Path(__file__).parent.parent / "data"
OPENAI, ANTHROPIC, OPENAI_RESPONSES = Schema.OPENAI, Schema.ANTHROPIC, Schema.OPENAI_RESPONSES
PAIRS = list(itertools.permutations(CODECS, 2))
CREATED = 1700000000


def pair_id(pair: tuple[Schema, Schema]) -> str:
    return f"{pair[1]}->{pair[0]}"  # the backend's API to the client's


def fixture(name: str) -> Any:
    return orjson.loads((DATA / name).read_bytes())


# -- requests -----------------------------------------------------------------------------

# What the Responses API leaves to the caller or has no place for elsewhere.
RESPONSES_DROPPED = [
    "include",
    "metadata",
    "previous_response_id",
    "reasoning",
    "store",
    "text.verbosity",
    "truncation",
]
REQUESTS = [
    # client, backend, request, fields taken out of it first (the backend's API has no
    # place for them: see the refusals), upstream model, default max_tokens, translated,
    # dropped
    (
        OPENAI,
        ANTHROPIC,
        "openai_request.json",
        (),
        "claude-sonnet-4-5",
        1024,
        "openai_request.to_anthropic.json",
        ["frequency_penalty", "seed"],
    ),
    (
        ANTHROPIC,
        OPENAI,
        "anthropic_request.json",
        (),
        "gpt-4o-2024-08-06",
        1024,
        "anthropic_request.to_openai.json",
        ["top_k"],
    ),
    (
        OPENAI_RESPONSES,
        OPENAI,
        "responses_request.json",
        (),
        "gpt-4o-2024-08-06",
        1024,
        "responses_request.to_openai.json",
        RESPONSES_DROPPED,
    ),
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        "responses_request.json",
        (),
        "claude-sonnet-4-5",
        1024,
        "responses_request.to_anthropic.json",
        RESPONSES_DROPPED,
    ),
    (
        OPENAI,
        OPENAI_RESPONSES,
        "openai_request.json",
        ("stop",),
        "gpt-5",
        1024,
        "openai_request.to_responses.json",
        ["frequency_penalty", "seed"],
    ),
    (
        ANTHROPIC,
        OPENAI_RESPONSES,
        "anthropic_request.json",
        ("stop_sequences",),
        "gpt-5",
        1024,
        "anthropic_request.to_responses.json",
        ["top_k"],
    ),
]


@pytest.mark.parametrize(
    (
        "client",
        "backend",
        "request_file",
        "removed",
        "model",
        "default",
        "expected_file",
        "dropped",
    ),
    REQUESTS,
    ids=[pair_id(row[:2]) for row in REQUESTS],
)
def test_a_conversation_translates_for_the_backend(
    client: Schema,
    backend: Schema,
    request_file: str,
    removed: tuple[str, ...],
    model: str,
    default: int,
    expected_file: str,
    dropped: list[str],
) -> None:
    # System prompts, merged turns, images, tool definitions, calls and results, choice,
    # sampling, stop sequences and the user id, each where the backend's API keeps it.
    body = fixture(f"translation/{request_file}")
    for name in removed:
        del body[name]
    translated, dropped_fields = Translation(client, backend).request(body, model, default)
    assert translated == fixture(f"translation/{expected_file}")
    assert dropped_fields == dropped


def test_openai_request_defaults_and_streaming() -> None:
    body, dropped = Translation(OPENAI, ANTHROPIC).request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "tools": [{"type": "function", "function": {"name": "lookup"}}],
        },
        "claude-x",
        777,
    )
    assert body["max_tokens"] == 777  # Anthropic requires it: the configured default
    assert body["stream"] is True and "stream_options" not in body
    assert body["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert body["tools"] == [
        {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert dropped == []


def test_anthropic_streaming_request_asks_for_usage() -> None:
    body, _ = Translation(ANTHROPIC, OPENAI).request(
        {
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
        "gpt-x",
        10,
    )
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


# The smallest valid request of each client API.
BASE = {
    OPENAI: {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    ANTHROPIC: {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    OPENAI_RESPONSES: {"model": "m", "input": "hi"},
}


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *parts]}]}


def _blocks(role: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": list(blocks)}]}


def _items(*items: dict[str, Any]) -> dict[str, Any]:
    return {"input": list(items)}


def _parts(role: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return _items({"role": role, "content": [{"type": "input_text", "text": "hi"}, *parts]})


# The Responses API's built-in tools, as its SDK types them: OpenAI runs them, no other
# backend can.
BUILT_IN_TOOLS = [
    {"type": "web_search"},
    {"type": "web_search_preview"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "computer_use_preview", "display_width": 1024, "display_height": 768},
    {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com"},
    {"type": "image_generation"},
    {"type": "local_shell"},
    {"type": "shell"},
    {"type": "apply_patch"},
    {"type": "custom", "name": "grammar_tool"},
]


REFUSALS = [
    # client, backend, what the request holds, the param named, the code (unsupported_value)
    (OPENAI, ANTHROPIC, {"n": 2}, "n", "unsupported_parameter"),
    (OPENAI, ANTHROPIC, {"temperature": 1.5}, "temperature", ""),
    (
        OPENAI,
        ANTHROPIC,
        {"messages": [{"role": "narrator", "content": "x"}]},
        "messages[0].role",
        "",
    ),
    (OPENAI, ANTHROPIC, _user({"type": "input_audio"}), "messages[0].content[1].type", ""),
    # Part types OpenAI-compatible servers take (validation lets them through)
    (
        OPENAI,
        ANTHROPIC,
        _user({"type": "video_url", "video_url": {"url": "u"}}),
        "messages[0].content[1].type",
        "",
    ),
    (
        OPENAI,
        ANTHROPIC,
        {"messages": [{"role": "system", "content": [{"type": "input_text", "text": "x"}]}]},
        "messages[0].content[0].type",
        "",
    ),
    (OPENAI, ANTHROPIC, {"tools": [{"type": "web_search"}]}, "tools[0].type", ""),
    (OPENAI, ANTHROPIC, {"tool_choice": "sometimes"}, "tool_choice", ""),
    (
        OPENAI,
        ANTHROPIC,
        {"response_format": {"type": "structural_tag"}},
        "response_format.type",
        "",
    ),
    # Anthropic's system turns: the top-level `system` translates, a turn does not
    (ANTHROPIC, OPENAI, {"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", ""),
    (
        ANTHROPIC,
        OPENAI,
        {"messages": [{"role": "narrator", "content": "x"}]},
        "messages[0].role",
        "",
    ),
    (
        ANTHROPIC,
        OPENAI,
        _blocks("user", {"type": "document", "source": {}}),
        "messages[0].content[0].type",
        "",
    ),
    # A block type Anthropic may add, as a client sends it before the gateway knows it
    (
        ANTHROPIC,
        OPENAI,
        _blocks("user", {"type": "video", "source": {}}),
        "messages[0].content[0].type",
        "",
    ),
    (ANTHROPIC, OPENAI, _blocks("assistant", {"type": "video"}), "messages[0].content[0].type", ""),
    (
        ANTHROPIC,
        OPENAI,
        _blocks("user", {"type": "tool_result", "content": [{"type": "video"}]}),
        "messages[0].content[0].content[0].type",
        "",
    ),
    # Blocks the hub holds that OpenAI has no place for where the client put them
    (
        ANTHROPIC,
        OPENAI,
        _blocks(
            "user",
            {
                "type": "tool_result",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}],
            },
        ),
        "messages[0].content[0].content[0].type",
        "",
    ),
    (
        ANTHROPIC,
        OPENAI,
        _blocks("assistant", {"type": "image", "source": {"type": "url", "url": "https://x"}}),
        "messages[0].content[0].type",
        "",
    ),
    (
        ANTHROPIC,
        OPENAI,
        _blocks("user", {"type": "tool_use", "id": "t", "name": "f", "input": {}}),
        "messages[0].content[0].type",
        "",
    ),
    (
        ANTHROPIC,
        OPENAI,
        _blocks("user", {"type": "image", "source": {"type": "ftp"}}),
        "messages[0].content[0].source.type",
        "",
    ),
    (
        ANTHROPIC,
        OPENAI,
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "tools[0].type",
        "",
    ),
    (ANTHROPIC, OPENAI, {"tool_choice": {"type": "sometimes"}}, "tool_choice.type", ""),
    (
        ANTHROPIC,
        OPENAI,
        {"output_config": {"format": {"type": "regex"}}},
        "output_config.format.type",
        "",
    ),
    # A Responses client: built-in tools are OpenAI's to run (for every other backend)
    *[
        (OPENAI_RESPONSES, backend, {"tools": [tool]}, "tools[0].type", "")
        for tool in BUILT_IN_TOOLS
        for backend in (OPENAI, ANTHROPIC)
    ],
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        {"tool_choice": {"type": "web_search_preview"}},
        "tool_choice.type",
        "",
    ),
    (OPENAI_RESPONSES, OPENAI, {"tool_choice": "sometimes"}, "tool_choice", ""),
    # ... so is state OpenAI keeps, and a response run in the background
    (OPENAI_RESPONSES, ANTHROPIC, {"conversation": "conv_1"}, "conversation", ""),
    (OPENAI_RESPONSES, OPENAI, {"prompt": {"id": "pmpt_1"}}, "prompt", ""),
    (OPENAI_RESPONSES, ANTHROPIC, {"background": True}, "background", ""),
    (
        OPENAI_RESPONSES,
        OPENAI,
        _items({"type": "item_reference", "id": "msg_1"}),
        "input[0].type",
        "",
    ),
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        _items({"type": "web_search_call", "id": "ws_1", "status": "completed"}),
        "input[0].type",
        "",
    ),
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        _items({"role": "narrator", "content": "x"}),
        "input[0].role",
        "",
    ),
    (
        OPENAI_RESPONSES,
        OPENAI,
        _parts("user", {"type": "input_file", "file_id": "file_1"}),
        "input[0].content[1].type",
        "",
    ),
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        _parts("user", {"type": "input_image", "file_id": "file_1", "detail": "auto"}),
        "input[0].content[1].image_url",
        "",
    ),
    (
        OPENAI_RESPONSES,
        OPENAI,
        _parts("developer", {"type": "input_image", "image_url": "https://x", "detail": "auto"}),
        "input[0].content[1].type",
        "",
    ),
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        {"text": {"format": {"type": "grammar"}}},
        "text.format.type",
        "",
    ),
    (
        OPENAI_RESPONSES,
        OPENAI,
        _items({"type": "function_call_output", "output": "18°C"}),
        "input[0].call_id",
        "",
    ),
    # What the Responses API has no place for, from a client of another API
    (OPENAI, OPENAI_RESPONSES, {"n": 2}, "n", "unsupported_parameter"),
    (OPENAI, OPENAI_RESPONSES, {"stop": ["END"]}, "stop", "unsupported_parameter"),
    (ANTHROPIC, OPENAI_RESPONSES, {"stop_sequences": ["END"]}, "stop", "unsupported_parameter"),
    (
        ANTHROPIC,
        OPENAI_RESPONSES,
        _blocks("assistant", {"type": "image", "source": {"type": "url", "url": "https://x"}}),
        "messages[0].content[0].type",
        "",
    ),
]


@pytest.mark.parametrize(
    ("client", "backend", "change", "param", "code"),
    REFUSALS,
    ids=[f"{pair_id(row[:2])}:{row[3]}" for row in REFUSALS],
)
def test_what_the_backend_cannot_do_is_a_clear_400(
    client: Schema, backend: Schema, change: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(Untranslatable) as caught:
        Translation(client, backend).request({**BASE[client], **change}, "c", 10)
    error = caught.value.error
    assert (error.status, error.code, error.param) == (400, code or "unsupported_value", param)
    assert f"'{param}'" in error.message or param in ("n", "temperature", "stop")


# A JSON Schema answer asked for, in each API's words, and where a backend finds it.
WEATHER = {"type": "object", "properties": {"c": {"type": "number"}}, "required": ["c"]}
JSON_ASKED = {
    OPENAI: {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER, "strict": True},
        }
    },
    ANTHROPIC: {"output_config": {"format": {"type": "json_schema", "schema": WEATHER}}},
    OPENAI_RESPONSES: {
        "text": {
            "format": {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True}
        }
    },
}
JSON_SEEN = {
    # Anthropic's format has no name: an OpenAI backend gets a neutral one.
    OPENAI: lambda body, named: (
        body["response_format"]
        == {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER, "strict": True}
            if named
            else {"name": "response", "schema": WEATHER},
        }
    ),
    ANTHROPIC: lambda body, named: (
        body["output_config"] == {"format": {"type": "json_schema", "schema": WEATHER}}
    ),
    OPENAI_RESPONSES: lambda body, named: (
        body["text"]
        == {
            "format": {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True}
            if named
            else {"type": "json_schema", "name": "response", "schema": WEATHER}
        }
    ),
}


@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=map(pair_id, PAIRS))
def test_a_json_schema_answer_is_asked_of_every_backend(client: Schema, backend: Schema) -> None:
    body, dropped = Translation(client, backend).request(
        {**BASE[client], **JSON_ASKED[client]}, "m", 10
    )
    assert JSON_SEEN[backend](body, client is not ANTHROPIC)
    assert dropped == []


def test_any_json_object_is_refused_for_a_backend_that_takes_only_a_schema() -> None:
    with pytest.raises(Untranslatable) as caught:
        Translation(OPENAI, ANTHROPIC).request(
            {**BASE[OPENAI], "response_format": {"type": "json_object"}}, "m", 10
        )
    assert caught.value.error.param == "response_format.type"
    with pytest.raises(Untranslatable) as caught:
        Translation(OPENAI_RESPONSES, ANTHROPIC).request(
            {**BASE[OPENAI_RESPONSES], "text": {"format": {"type": "json_object"}}}, "m", 10
        )
    assert caught.value.error.param == "text.format.type"
    # Between the OpenAI APIs, any JSON object is asked as such.
    body, _ = Translation(OPENAI_RESPONSES, OPENAI).request(
        {**BASE[OPENAI_RESPONSES], "text": {"format": {"type": "json_object"}}}, "m", 10
    )
    assert body["response_format"] == {"type": "json_object"}
    body, _ = Translation(OPENAI, OPENAI_RESPONSES).request(
        {**BASE[OPENAI], "response_format": {"type": "json_object"}}, "m", 10
    )
    assert body["text"] == {"format": {"type": "json_object"}}
    body, _ = Translation(OPENAI, ANTHROPIC).request(
        {**BASE[OPENAI], "response_format": {"type": "text"}}, "m", 10
    )
    assert "output_config" not in body


def test_anthropic_output_settings_beside_the_format_are_named_as_dropped() -> None:
    change = {"output_config": {"effort": "low", "format": None}}
    body, dropped = Translation(ANTHROPIC, OPENAI).request({**BASE[ANTHROPIC], **change}, "m", 1)
    assert "response_format" not in body
    assert dropped == ["output_config.effort"]


# -- JSON responses -----------------------------------------------------------------------

WRITE_RESPONSE = {
    OPENAI: partial(openai_chat.write_response, created=CREATED),
    ANTHROPIC: anthropic_messages.write_response,
    OPENAI_RESPONSES: partial(openai_responses.write_response, created=CREATED),
}
# Where an answer says when it was made (an Anthropic message does not).
CREATED_AT = {OPENAI: "created", ANTHROPIC: "type", OPENAI_RESPONSES: "created_at"}


def respond(client: Schema, backend: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """The backend's answer for the client (with a fixed creation time for OpenAI's)."""
    answer = WRITE_RESPONSE[client](CODECS[backend].read_response(body))
    translated = Translation(client, backend).response(body)
    at = CREATED_AT[client]
    assert {**translated, at: 0} == {**answer, at: 0}  # the same, at any time
    return answer


def responses_answer(id: str, model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    """A Responses API answer of one message, as the codec writes it."""
    prompt = usage["input"] + usage["cached"] + usage["written"]
    return {
        "id": f"resp_{id}",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [
            {
                "id": f"msg_{id}_0",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {
                "cached_tokens": usage["cached"],
                "cache_write_tokens": usage["written"],
            },
            "output_tokens": usage["output"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + usage["output"],
        },
    }


BOARDWALK = "The image shows a wooden boardwalk path running through a lush green field or meadow."
RESPONSES = [
    (
        OPENAI,
        ANTHROPIC,
        "anthropic_message.json",
        {
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "object": "chat.completion",
            "created": CREATED,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hi! My name is Claude.",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 2095 + 2048 + 4096,
                "completion_tokens": 503,
                "total_tokens": 2095 + 2048 + 4096 + 503,
                "prompt_tokens_details": {"cached_tokens": 4096},
            },
        },
    ),
    (
        ANTHROPIC,
        OPENAI,
        "openai_chat.json",
        {
            "id": "msg_chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o-2024-08-06",
            "content": [
                {
                    "type": "text",
                    "text": "The image shows a wooden boardwalk path running through a lush green field or meadow.",
                }
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 1117 - 1024,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 1024,
                "output_tokens": 46,
            },
        },
    ),
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        "anthropic_message.json",
        responses_answer(
            "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "claude-sonnet-4-5-20250929",
            "Hi! My name is Claude.",
            {"input": 2095, "cached": 4096, "written": 2048, "output": 503},
        ),
    ),
    (
        OPENAI_RESPONSES,
        OPENAI,
        "openai_chat.json",
        responses_answer(
            "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "gpt-4o-2024-08-06",
            BOARDWALK,
            {"input": 1117 - 1024, "cached": 1024, "written": 0, "output": 46},
        ),
    ),
    (
        OPENAI,
        OPENAI_RESPONSES,
        "openai_responses.json",
        {
            "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
            "object": "chat.completion",
            "created": CREATED,
            "model": "gpt-5-2025-08-07",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": BOARDWALK, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            # The output's count holds the reasoning tokens, as Chat Completions' does.
            "usage": {
                "prompt_tokens": 1117,
                "completion_tokens": 78,
                "total_tokens": 1195,
                "prompt_tokens_details": {"cached_tokens": 1024},
            },
        },
    ),
    (
        ANTHROPIC,
        OPENAI_RESPONSES,
        "openai_responses.json",
        {
            "id": "msg_resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
            "type": "message",
            "role": "assistant",
            "model": "gpt-5-2025-08-07",
            "content": [
                # The reasoning summary, unsigned: sent back, Anthropic's codec leaves it out.
                {
                    "type": "thinking",
                    "thinking": "**Describing the image**\n\nA boardwalk through a meadow.",
                    "signature": "",
                },
                {"type": "text", "text": BOARDWALK},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 1117 - 1024,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 1024,
                "output_tokens": 78,
            },
        },
    ),
]


@pytest.mark.parametrize(
    ("client", "backend", "answer_file", "expected"),
    RESPONSES,
    ids=[pair_id(row[:2]) for row in RESPONSES],
)
def test_an_answer_translates_for_the_client(
    client: Schema, backend: Schema, answer_file: str, expected: dict[str, Any]
) -> None:
    # Text, the stop reason and usage with its cached tokens, in the client's terms.
    assert respond(client, backend, fixture(f"responses/{answer_file}")) == expected


# A backend's answer holding text and one tool call, and where the client finds them.
TOOL_ANSWERS = {
    ANTHROPIC: {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    },
    OPENAI: {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    },
    OPENAI_RESPONSES: {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-5",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {
                "id": "fc_1",
                "type": "function_call",
                "status": "completed",
                "call_id": "toolu_1",
                "name": "get_weather",
                "arguments": '{"a":1}',
            },
        ],
    },
}
TOOL_CALLS_SEEN = {
    OPENAI: lambda answer: (
        answer["choices"][0]["finish_reason"],
        answer["choices"][0]["message"]["content"],
        answer["choices"][0]["message"]["tool_calls"],
    ),
    ANTHROPIC: lambda answer: (answer["stop_reason"], answer["content"]),
    # The arguments as JSON: each backend's API spells them its own way.
    OPENAI_RESPONSES: lambda answer: (
        answer["status"],
        [
            (item["type"], item["content"][0]["text"])
            if item["type"] == "message"
            else (item["type"], item["call_id"], item["name"], orjson.loads(item["arguments"]))
            for item in answer["output"]
        ],
    ),
}
TOOL_CALLS_EXPECTED = {
    OPENAI: (
        "tool_calls",
        "Checking.",
        [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"a":1}'},
            }
        ],
    ),
    ANTHROPIC: (
        "tool_use",
        [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"a": 1}},
        ],
    ),
    OPENAI_RESPONSES: (
        "completed",
        [("message", "Checking."), ("function_call", "toolu_1", "get_weather", {"a": 1})],
    ),
}


@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=map(pair_id, PAIRS))
def test_tool_calls_in_an_answer_reach_the_client(client: Schema, backend: Schema) -> None:
    answer = respond(client, backend, TOOL_ANSWERS[backend])
    assert TOOL_CALLS_SEEN[client](answer) == TOOL_CALLS_EXPECTED[client]


def test_openai_tool_calls_without_text_become_tool_use_alone() -> None:
    completion = copy.deepcopy(TOOL_ANSWERS[OPENAI])
    completion["choices"][0]["message"]["content"] = None
    message = respond(ANTHROPIC, OPENAI, completion)
    assert message["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"a": 1}}
    ]
    assert message["stop_reason"] == "tool_use"


STOPS = [
    # client, backend, the backend's reason, the client's
    (OPENAI, ANTHROPIC, "end_turn", "stop"),
    (OPENAI, ANTHROPIC, "max_tokens", "length"),
    (OPENAI, ANTHROPIC, "stop_sequence", "stop"),
    (OPENAI, ANTHROPIC, "refusal", "content_filter"),
    (OPENAI, ANTHROPIC, "tool_use", "tool_calls"),
    (OPENAI, ANTHROPIC, "pause_turn", "stop"),
    (OPENAI, ANTHROPIC, "model_context_window_exceeded", "length"),
    (OPENAI, ANTHROPIC, "a_reason_added_later", "stop"),
    (ANTHROPIC, OPENAI, "stop", "end_turn"),
    (ANTHROPIC, OPENAI, "length", "max_tokens"),
    (ANTHROPIC, OPENAI, "tool_calls", "tool_use"),
    (ANTHROPIC, OPENAI, "function_call", "tool_use"),
    (ANTHROPIC, OPENAI, "content_filter", "refusal"),
    (ANTHROPIC, OPENAI, "a_reason_added_later", "end_turn"),
    # A Responses answer's status, and why it is incomplete
    (OPENAI, OPENAI_RESPONSES, "completed", "stop"),
    (OPENAI, OPENAI_RESPONSES, "incomplete:max_output_tokens", "length"),
    (OPENAI, OPENAI_RESPONSES, "incomplete:content_filter", "content_filter"),
    (OPENAI, OPENAI_RESPONSES, "incomplete:a_reason_added_later", "length"),
    (ANTHROPIC, OPENAI_RESPONSES, "completed", "end_turn"),
    (ANTHROPIC, OPENAI_RESPONSES, "incomplete:max_output_tokens", "max_tokens"),
    (ANTHROPIC, OPENAI_RESPONSES, "incomplete:content_filter", "refusal"),
    (OPENAI_RESPONSES, OPENAI, "stop", "completed"),
    (OPENAI_RESPONSES, OPENAI, "length", "incomplete:max_output_tokens"),
    (OPENAI_RESPONSES, OPENAI, "content_filter", "incomplete:content_filter"),
    (OPENAI_RESPONSES, OPENAI, "tool_calls", "completed"),
    (OPENAI_RESPONSES, ANTHROPIC, "end_turn", "completed"),
    (OPENAI_RESPONSES, ANTHROPIC, "stop_sequence", "completed"),
    (OPENAI_RESPONSES, ANTHROPIC, "max_tokens", "incomplete:max_output_tokens"),
    (OPENAI_RESPONSES, ANTHROPIC, "model_context_window_exceeded", "incomplete:max_output_tokens"),
    (OPENAI_RESPONSES, ANTHROPIC, "refusal", "incomplete:content_filter"),
    (OPENAI_RESPONSES, ANTHROPIC, "pause_turn", "completed"),
]


def _responses_with(reason: str) -> dict[str, Any]:
    state, _, why = reason.partition(":")
    message = {"type": "message", "content": [{"type": "output_text", "text": "x"}]}
    return {
        "id": "r",
        "output": [message],
        "status": state,
        "incomplete_details": {"reason": why} if why else None,
    }


def _responses_reason(answer: dict[str, Any]) -> str:
    details = answer["incomplete_details"]
    return answer["status"] + (f":{details['reason']}" if details else "")


ANSWER_WITH_REASON = {
    ANTHROPIC: lambda reason: {
        "id": "m",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": reason,
    },
    OPENAI: lambda reason: {
        "id": "c",
        "choices": [{"message": {"content": "x"}, "finish_reason": reason}],
    },
    OPENAI_RESPONSES: _responses_with,
}
REASON_OF = {
    OPENAI: lambda answer: answer["choices"][0]["finish_reason"],
    ANTHROPIC: lambda answer: answer["stop_reason"],
    OPENAI_RESPONSES: _responses_reason,
}


@pytest.mark.parametrize(
    ("client", "backend", "reason", "expected"),
    STOPS,
    ids=[f"{pair_id(row[:2])}:{row[2]}" for row in STOPS],
)
def test_stop_reasons(client: Schema, backend: Schema, reason: str, expected: str) -> None:
    answer = respond(client, backend, ANSWER_WITH_REASON[backend](reason))
    assert REASON_OF[client](answer) == expected


# -- errors -------------------------------------------------------------------------------------

ERRORS = [
    # client, backend, the provider's status and body, the client's status and body
    (
        OPENAI,
        ANTHROPIC,
        529,
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        503,
        {
            "error": {
                "message": "Overloaded",
                "type": "server_error",
                "param": None,
                "code": "overloaded_error",
            }
        },
    ),
    (
        OPENAI,
        ANTHROPIC,
        429,
        b'{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}',
        429,
        {
            "error": {
                "message": "Slow down",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_error",
            }
        },
    ),
    (
        ANTHROPIC,
        OPENAI,
        404,
        b'{"error":{"message":"Invalid model","type":"invalid_request_error","param":"model","code":"model_not_found"}}',
        404,
        {"type": "error", "error": {"type": "not_found_error", "message": "Invalid model"}},
    ),
    (
        ANTHROPIC,
        OPENAI,
        502,
        b"<html>Bad gateway</html>",
        502,
        {
            "type": "error",
            "error": {"type": "api_error", "message": "The provider returned an error."},
        },
    ),
    # The Responses API's errors are OpenAI's
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        529,
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        503,
        {
            "error": {
                "message": "Overloaded",
                "type": "server_error",
                "param": None,
                "code": "overloaded_error",
            }
        },
    ),
    (
        OPENAI_RESPONSES,
        OPENAI,
        429,
        b'{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
        429,
        {
            "error": {
                "message": "Rate limit reached",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
    ),
    (
        ANTHROPIC,
        OPENAI_RESPONSES,
        400,
        b'{"error":{"message":"Invalid \'max_output_tokens\': integer below minimum value.","type":"invalid_request_error","param":"max_output_tokens","code":"integer_below_min_value"}}',
        400,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "Invalid 'max_output_tokens': integer below minimum value.",
            },
        },
    ),
    (
        OPENAI,
        OPENAI_RESPONSES,
        500,
        b'{"error":{"message":"The server had an error.","type":"server_error","param":null,"code":"server_error"}}',
        500,
        {
            "error": {
                "message": "The server had an error.",
                "type": "server_error",
                "param": None,
                "code": "server_error",
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("client", "backend", "status", "raw", "client_status", "expected"),
    ERRORS,
    ids=[f"{pair_id(row[:2])}:{row[2]}" for row in ERRORS],
)
def test_provider_errors_are_rewritten_into_the_clients_schema(
    client: Schema,
    backend: Schema,
    status: int,
    raw: bytes,
    client_status: int,
    expected: dict[str, Any],
) -> None:
    translation = Translation(client, backend)
    got_status, body = translation.error(status, raw)
    assert (got_status, orjson.loads(body)) == (client_status, expected)
    assert translation.status(status) == client_status


# -- hostile input ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


def _anthropic_request(body: dict[str, Any]) -> None:
    # Anthropic's shape: alternating user/assistant turns of content blocks.
    turns = body["messages"]
    assert all(turn["role"] in ("user", "assistant") for turn in turns)
    assert all(a["role"] != b["role"] for a, b in itertools.pairwise(turns))
    assert all(isinstance(turn["content"], list) for turn in turns)


def _openai_request(body: dict[str, Any]) -> None:
    roles = ("system", "user", "assistant", "tool")
    assert all(message["role"] in roles for message in body["messages"])


def _responses_request(body: dict[str, Any]) -> None:
    # Messages by role, and function calls and their outputs; nothing kept by OpenAI.
    for item in body["input"]:
        assert item.get("role") in ("user", "assistant", "system") or item["type"] in (
            "function_call",
            "function_call_output",
        )
    assert body["store"] is False


BACKEND_REQUEST = {
    OPENAI: _openai_request,
    ANTHROPIC: _anthropic_request,
    OPENAI_RESPONSES: _responses_request,
}
# Where a backend's request says how long an answer may be.
MAX_TOKENS = {OPENAI: "max_tokens", ANTHROPIC: "max_tokens", OPENAI_RESPONSES: "max_output_tokens"}
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer"])},
        optional={"content": JSON_VALUES, "tool_calls": JSON_VALUES, "tool_call_id": JSON_VALUES},
    ),
    min_size=1,
    max_size=4,
)
_items = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                [
                    "message",
                    "function_call",
                    "function_call_output",
                    "reasoning",
                    "file_search_call",
                ]
            ),
            "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
            "content": JSON_VALUES,
            "call_id": JSON_VALUES,
            "name": JSON_VALUES,
            "arguments": JSON_VALUES,
            "output": JSON_VALUES,
            "summary": JSON_VALUES,
        },
    )
    | JSON_VALUES,
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    _messages,
    _items,
    st.dictionaries(
        st.sampled_from(
            ["tools", "tool_choice", "stop", "n", "temperature", "system", "text", "instructions"]
        ),
        JSON_VALUES,
        max_size=3,
    ),
)
def test_request_translators_refuse_cleanly(
    messages: list[dict[str, Any]], items: list[Any], extra: dict[str, Any]
) -> None:
    for client, backend in PAIRS:
        turns = {"input": items} if client is OPENAI_RESPONSES else {"messages": messages}
        body = {**BASE[client], **turns, **extra}
        try:
            translated, _ = Translation(client, backend).request(body, "m", 10)
        except Untranslatable as refused:
            assert refused.error.status == 400
        else:
            # The client's max_tokens, or the backend's default where its API requires one.
            assert translated["model"] == "m"
            default = 10 if backend is ANTHROPIC else None
            expected = BASE[client].get("max_tokens", default)
            assert translated.get(MAX_TOKENS[backend]) == expected
            BACKEND_REQUEST[backend](translated)
            orjson.dumps(translated)


def _openai_answer(completion: dict[str, Any]) -> None:
    assert completion["object"] == "chat.completion" and completion["created"] == CREATED
    [choice] = completion["choices"]
    assert choice["finish_reason"] in set(openai_chat_stream.FINISH_REASONS.values()) | {"stop"}
    message = choice["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str) or message.get("tool_calls")
    for call in message.get("tool_calls", []):
        assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
    assert set(completion["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


def _anthropic_answer(message: dict[str, Any]) -> None:
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    stop_reasons = set(anthropic_messages_stream.STOP_REASONS.values()) | {"end_turn"}
    assert message["stop_reason"] in stop_reasons
    for block in message["content"]:
        assert (
            (block["type"] == "text" and isinstance(block["text"], str) and block["text"])
            or (block["type"] == "tool_use" and isinstance(block["input"], dict))
            or (block["type"] == "thinking" and isinstance(block["thinking"], str))
        )
    usage = message["usage"]
    assert all(isinstance(value, int) and value >= 0 for value in usage.values())


def _responses_answer(response: dict[str, Any]) -> None:
    assert response["object"] == "response" and response["created_at"] == CREATED
    assert response["id"].startswith("resp_")
    assert response["status"] in ("completed", "incomplete")
    for item in response["output"]:
        assert item["id"].startswith(("msg_", "fc_", "rs_"))
        if item["type"] == "message":
            assert [part["type"] for part in item["content"]] == ["output_text"]
        else:
            assert item["type"] in ("function_call", "reasoning")
    usage = response["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


CLIENT_ANSWER = {
    OPENAI: _openai_answer,
    ANTHROPIC: _anthropic_answer,
    OPENAI_RESPONSES: _responses_answer,
}


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["id", "model", "content", "choices", "usage", "stop_reason", "output", "status"]
        ),
        JSON_VALUES,
        max_size=5,
    )
)
def test_response_translators_survive_any_body(body: dict[str, Any]) -> None:
    # Whatever the provider's body holds, the client gets its API's shape.
    for client, backend in PAIRS:
        answer = respond(client, backend, body)
        CLIENT_ANSWER[client](answer)
        orjson.dumps(answer)
