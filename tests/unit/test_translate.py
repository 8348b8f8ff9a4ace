"""OpenAI <-> Anthropic translation from the documented request, response and stream
formats of each provider, in both directions."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc.sse import Parser
from extproc.translate import anthropic_to_openai as a2o
from extproc.translate import openai_to_anthropic as o2a
from extproc.translate.common import Untranslatable

DATA = Path(__file__).parent.parent / "data" / "responses"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string"}},
    "required": ["location"],
}
PNG = "iVBORw0KGgo="


def events_of(name: str) -> list[dict[str, Any]]:
    parsed = Parser().feed((DATA / name).read_bytes())
    return [orjson.loads(e.data) for e in parsed if e.data and e.data != "[DONE]"]


# -- OpenAI client -> Anthropic backend -------------------------------------------------

OPENAI_CONVERSATION = {
    "model": "claude-sonnet",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Lyon"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "21°C"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a place",
                "parameters": WEATHER_SCHEMA,
            },
        }
    ],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "max_completion_tokens": 300,
    "temperature": 0.2,
    "top_p": 0.9,
    "stop": "END",
    "user": "user-42",
    "seed": 7,
    "frequency_penalty": 0.5,
}


def test_openai_request_becomes_anthropic() -> None:
    body, dropped = o2a.request(OPENAI_CONVERSATION, "claude-sonnet-4-5", 1024)
    assert body == {
        "model": "claude-sonnet-4-5",
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Use metric units."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's the weather in Paris?"},
                    {"type": "text", "text": "And this picture?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "get_weather",
                        "input": {"location": "Lyon"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "21°C"},
                ],
            },
        ],
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a place",
                "input_schema": WEATHER_SCHEMA,
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "user-42"},
    }
    assert dropped == ["frequency_penalty", "seed"]


def test_openai_request_defaults_and_streaming() -> None:
    body, dropped = o2a.request(
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


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *parts]}]}


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"n": 2}, "n", "unsupported_parameter"),
        ({"temperature": 1.5}, "temperature", "unsupported_value"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role", ""),
        (_user({"type": "input_audio"}), "messages[0].content[1].type", ""),
        # Part types OpenAI-compatible servers take (validation lets them through)
        (
            _user({"type": "video_url", "video_url": {"url": "u"}}),
            "messages[0].content[1].type",
            "",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "input_text", "text": "x"}]}]},
            "messages[0].content[0].type",
            "",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", ""),
        ({"tool_choice": "sometimes"}, "tool_choice", ""),
    ],
)
def test_what_anthropic_cannot_do_is_a_clear_400(
    change: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(Untranslatable) as caught:
        o2a.request(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}, "c", 10
        )
    error = caught.value.error
    assert (error.status, error.code, error.param) == (400, code or "unsupported_value", param)
    assert f"'{param}'" in error.message or param in ("n", "temperature")


def test_anthropic_response_becomes_a_chat_completion() -> None:
    message = orjson.loads((DATA / "anthropic_message.json").read_bytes())
    completion = o2a.response(message, created=1700000000)
    assert completion == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "created": 1700000000,
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
    }


def test_anthropic_tool_use_becomes_tool_calls() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"location": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    choice = o2a.response(message)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
        }
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    message = {"id": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason}
    assert o2a.response(message)["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("include_usage", [False, True])
def test_anthropic_stream_becomes_openai_chunks(include_usage: bool) -> None:
    translator = o2a.StreamTranslator(include_usage, created=1)
    out: list[Any] = []
    for event in events_of("anthropic_stream.sse"):
        out += translator.event(event)
    assert out[-1] == "[DONE]" and translator.finish() == []
    chunks = [c for c in out if isinstance(c, dict)]
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"].startswith("msg_") for c in chunks
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        [usage] = usage_chunks
        assert usage["usage"]["prompt_tokens"] == 480 + 100 + 2000
        assert usage["usage"]["completion_tokens"] == 89
    else:
        assert usage_chunks == []


def test_anthropic_stream_error_event() -> None:
    translator = o2a.StreamTranslator(False)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = translator.event(error)
    assert out[0] == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    }
    assert out[-1] == "[DONE]"


# -- Anthropic client -> OpenAI backend -------------------------------------------------

ANTHROPIC_CONVERSATION = {
    "model": "gpt-4o",
    "system": [{"type": "text", "text": "You are terse."}],
    "max_tokens": 256,
    "messages": [
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"location": "Lyon"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "unavailable"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Also, this image:"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather for a place",
            "input_schema": WEATHER_SCHEMA,
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "temperature": 0.3,
    "top_k": 40,
    "metadata": {"user_id": "user-42"},
}


def test_anthropic_request_becomes_openai() -> None:
    body, dropped = a2o.request(ANTHROPIC_CONVERSATION, "gpt-4o-2024-08-06")
    assert body == {
        "model": "gpt-4o-2024-08-06",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris and Lyon?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Lyon"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: unavailable"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Also, this image:"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
        ],
        "max_tokens": 256,
        "temperature": 0.3,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER_SCHEMA,
                    "description": "Weather for a place",
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "user": "user-42",
    }
    assert dropped == ["top_k"]


def test_anthropic_streaming_request_asks_for_usage() -> None:
    body, _ = a2o.request(
        {
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
        "gpt-x",
    )
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        # Anthropic's system turns: the top-level `system` translates, a turn does not
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        # A block type Anthropic may add, as a client sends it before the gateway knows it
        (
            {"messages": [{"role": "user", "content": [{"type": "video", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "video"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "content": [{"type": "video"}]}],
                    }
                ]
            },
            "messages[0].content[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}
                ]
            },
            "messages[0].content[0].source.type",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ],
)
def test_what_openai_cannot_do_is_a_clear_400(change: dict[str, Any], param: str) -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        **change,
    }
    with pytest.raises(Untranslatable) as caught:
        a2o.request(body, "gpt")
    error = caught.value.error
    assert (error.status, error.code, error.param) == (400, "unsupported_value", param)
    assert f"'{param}'" in error.message


def test_openai_response_becomes_an_anthropic_message() -> None:
    completion = orjson.loads((DATA / "openai_chat.json").read_bytes())
    assert a2o.response(completion) == {
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
    }


def test_openai_tool_calls_become_tool_use() -> None:
    completion = {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    message = a2o.response(completion)
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}
    ]
    assert message["stop_reason"] == "tool_use"


def test_openai_stream_becomes_anthropic_events() -> None:
    translator = a2o.StreamTranslator()
    out: list[tuple[str, dict[str, Any]]] = []
    for chunk in events_of("openai_stream_usage.sse"):
        out += translator.chunk(chunk)
    out += translator.finish()
    names = [name for name, _ in out]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [payload for _, payload in out]
    assert payloads[0]["message"]["id"] == "msg_chatcmpl-AbC123"
    assert payloads[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(
        p["delta"]["text"] for p in payloads if p.get("delta", {}).get("type") == "text_delta"
    )
    assert text == "Héllo wörld ☕"
    assert payloads[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_abc",
        "name": "get_weather",
        "input": {},
    }
    assert all(p["index"] == 1 for p in payloads[5:9])
    arguments = "".join(
        p["delta"]["partial_json"]
        for p in payloads
        if p.get("delta", {}).get("type") == "input_json_delta"
    )
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert payloads[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert payloads[-2]["usage"] == {
        "input_tokens": 82 - 64,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 64,
        "output_tokens": 17,
    }
    assert translator.finish() == []


def test_openai_stream_cut_short_still_ends_cleanly() -> None:
    translator = a2o.StreamTranslator()
    chunks = events_of("openai_stream.sse")[:2]
    out = [e for chunk in chunks for e in translator.chunk(chunk)] + translator.finish()
    assert [name for name, _ in out][-3:] == ["content_block_stop", "message_delta", "message_stop"]


# -- errors -----------------------------------------------------------------------------


def test_provider_errors_are_rewritten_into_the_clients_schema() -> None:
    from extproc.apis import Schema
    from extproc.translate.pair import Translation

    to_openai = Translation(Schema.OPENAI, Schema.ANTHROPIC)
    anthropic_error = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    status, body = to_openai.error(529, anthropic_error)
    assert status == 503
    assert orjson.loads(body) == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    status, body = to_openai.error(
        429, b'{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}'
    )
    assert status == 429 and orjson.loads(body)["error"]["type"] == "rate_limit_error"
    to_anthropic = Translation(Schema.ANTHROPIC, Schema.OPENAI)
    openai_error = b'{"error":{"message":"Invalid model","type":"invalid_request_error","param":"model","code":"model_not_found"}}'
    status, body = to_anthropic.error(404, openai_error)
    assert status == 404
    assert orjson.loads(body) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Invalid model"},
    }
    status, body = to_anthropic.error(502, b"<html>Bad gateway</html>")
    assert status == 502
    assert orjson.loads(body)["error"] == {
        "type": "api_error",
        "message": "The provider returned an error.",
    }


# -- hostile input ----------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "type",
        "index",
        "delta",
        "content_block",
        "message",
        "usage",
        "choices",
        "error",
        "id",
        "model",
    ]
)
_events = st.dictionaries(
    _keys,
    _json
    | st.sampled_from(
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "message_delta",
            "message_stop",
            "text_delta",
            "input_json_delta",
            "tool_use",
            "error",
        ]
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_events, max_size=8))
def test_stream_translators_survive_any_events(events: list[dict[str, Any]]) -> None:
    to_openai = o2a.StreamTranslator(include_usage=True)
    to_anthropic = a2o.StreamTranslator()
    for event in events:
        for chunk in to_openai.event(event):
            # Each is an OpenAI chunk, an error, or the end; whatever the events held.
            assert chunk == "[DONE]" or (
                isinstance(chunk, dict)
                and (chunk.get("object") == "chat.completion.chunk" or set(chunk) == {"error"})
            ), chunk
            orjson.dumps(chunk)
        for name, payload in to_anthropic.chunk(event):
            assert payload["type"] == name, (name, payload)  # Anthropic's event framing
            orjson.dumps(payload)
    # However the events went, each stream is closed once: [DONE], message_stop.
    assert to_openai.finish()[-1:] in (["[DONE]"], [])
    assert to_openai.finished and to_openai.finish() == []
    assert [name for name, _ in to_anthropic.finish()][-1:] in (["message_stop"], [])
    assert to_anthropic.finished and to_anthropic.finish() == []


_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer"])},
        optional={"content": _json, "tool_calls": _json, "tool_call_id": _json},
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    _messages,
    st.dictionaries(
        st.sampled_from(["tools", "tool_choice", "stop", "n", "temperature", "system"]),
        _json,
        max_size=3,
    ),
)
def test_request_translators_refuse_cleanly(
    messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    body = {"model": "m", "messages": messages, **extra}
    try:
        to_anthropic, _ = o2a.request(body, "m", 10)
    except Untranslatable as refused:
        assert refused.error.status == 400
    else:
        # Anthropic's shape: alternating user/assistant turns of content blocks.
        assert to_anthropic["model"] == "m" and to_anthropic["max_tokens"] == 10
        turns = to_anthropic["messages"]
        assert all(turn["role"] in ("user", "assistant") for turn in turns)
        assert all(a["role"] != b["role"] for a, b in itertools.pairwise(turns))
        assert all(isinstance(turn["content"], list) for turn in turns)
        orjson.dumps(to_anthropic)
    try:
        to_openai, _ = a2o.request({**body, "max_tokens": 5}, "m")
    except Untranslatable as refused:
        assert refused.error.status == 400
    else:
        assert to_openai["model"] == "m" and to_openai["max_tokens"] == 5
        roles = ("system", "user", "assistant", "tool")
        assert all(message["role"] in roles for message in to_openai["messages"])
        orjson.dumps(to_openai)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "model", "content", "choices", "usage", "stop_reason"]),
        _json,
        max_size=5,
    )
)
def test_response_translators_survive_any_body(body: dict[str, Any]) -> None:
    # Whatever the provider's body holds, the client gets its API's shape.
    completion = o2a.response(body, created=1)
    assert completion["object"] == "chat.completion" and completion["created"] == 1
    [choice] = completion["choices"]
    assert choice["finish_reason"] in set(o2a.FINISH_REASONS.values()) | {"stop"}
    message = choice["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str) or message.get("tool_calls")
    for call in message.get("tool_calls", []):
        assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
    assert set(completion["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    orjson.dumps(completion)
    anthropic_message = a2o.response(body)
    assert anthropic_message["type"] == "message" and anthropic_message["role"] == "assistant"
    assert anthropic_message["id"].startswith("msg_")
    assert anthropic_message["stop_reason"] in set(a2o.STOP_REASONS.values()) | {"end_turn"}
    for block in anthropic_message["content"]:
        assert (block["type"] == "text" and isinstance(block["text"], str) and block["text"]) or (
            block["type"] == "tool_use" and isinstance(block["input"], dict)
        )
    usage = anthropic_message["usage"]
    assert all(isinstance(value, int) and value >= 0 for value in usage.values())
    orjson.dumps(anthropic_message)
