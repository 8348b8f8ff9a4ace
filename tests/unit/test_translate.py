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
)
from extproc.translate.hub import Untranslatable
from extproc.translate.translation import CODECS, Translation

DATA = Path(__file__).parent.parent / "data"
OPENAI, ANTHROPIC = Schema.OPENAI, Schema.ANTHROPIC
PAIRS = list(itertools.permutations(CODECS, 2))
CREATED = 1700000000


def pair_id(pair: tuple[Schema, Schema]) -> str:
    return f"{pair[1]}->{pair[0]}"  # the backend's API to the client's


def fixture(name: str) -> Any:
    return orjson.loads((DATA / name).read_bytes())


# -- requests -----------------------------------------------------------------------------

REQUESTS = [
    # client, backend, request, upstream model, default max_tokens, translated, dropped
    (
        OPENAI,
        ANTHROPIC,
        "openai_request.json",
        "claude-sonnet-4-5",
        1024,
        "openai_request.to_anthropic.json",
        ["frequency_penalty", "seed"],
    ),
    (
        ANTHROPIC,
        OPENAI,
        "anthropic_request.json",
        "gpt-4o-2024-08-06",
        1024,
        "anthropic_request.to_openai.json",
        ["top_k"],
    ),
]


@pytest.mark.parametrize(
    ("client", "backend", "request_file", "model", "default", "expected_file", "dropped"),
    REQUESTS,
    ids=[pair_id(row[:2]) for row in REQUESTS],
)
def test_a_conversation_translates_for_the_backend(
    client: Schema,
    backend: Schema,
    request_file: str,
    model: str,
    default: int,
    expected_file: str,
    dropped: list[str],
) -> None:
    # System prompts, merged turns, images, tool definitions, calls and results, choice,
    # sampling, stop sequences and the user id, each where the backend's API keeps it.
    body = fixture(f"translation/{request_file}")
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
}


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *parts]}]}


def _blocks(role: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": list(blocks)}]}


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
    assert f"'{param}'" in error.message or param in ("n", "temperature")


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
}


def respond(client: Schema, backend: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """The backend's answer for the client (with a fixed `created` for OpenAI's)."""
    answer = WRITE_RESPONSE[client](CODECS[backend].read_response(body))
    translated = Translation(client, backend).response(body)
    assert {**translated, "created": 0} == {**answer, "created": 0}  # the same, at any time
    return answer


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
}
TOOL_CALLS_SEEN = {
    OPENAI: lambda answer: (
        answer["choices"][0]["finish_reason"],
        answer["choices"][0]["message"]["content"],
        answer["choices"][0]["message"]["tool_calls"],
    ),
    ANTHROPIC: lambda answer: (answer["stop_reason"], answer["content"]),
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
]
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
}
REASON_OF = {
    OPENAI: lambda answer: answer["choices"][0]["finish_reason"],
    ANTHROPIC: lambda answer: answer["stop_reason"],
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


BACKEND_REQUEST = {OPENAI: _openai_request, ANTHROPIC: _anthropic_request}
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer"])},
        optional={"content": JSON_VALUES, "tool_calls": JSON_VALUES, "tool_call_id": JSON_VALUES},
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    _messages,
    st.dictionaries(
        st.sampled_from(["tools", "tool_choice", "stop", "n", "temperature", "system"]),
        JSON_VALUES,
        max_size=3,
    ),
)
def test_request_translators_refuse_cleanly(
    messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    for client, backend in PAIRS:
        body = {**BASE[client], "messages": messages, **extra}
        try:
            translated, _ = Translation(client, backend).request(body, "m", 10)
        except Untranslatable as refused:
            assert refused.error.status == 400
        else:
            # The client's max_tokens, or the backend's default where its API requires one.
            assert translated["model"] == "m"
            assert translated["max_tokens"] == BASE[client].get("max_tokens", 10)
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
        assert (block["type"] == "text" and isinstance(block["text"], str) and block["text"]) or (
            block["type"] == "tool_use" and isinstance(block["input"], dict)
        )
    usage = message["usage"]
    assert all(isinstance(value, int) and value >= 0 for value in usage.values())


CLIENT_ANSWER = {OPENAI: _openai_answer, ANTHROPIC: _anthropic_answer}


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "model", "content", "choices", "usage", "stop_reason"]),
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
