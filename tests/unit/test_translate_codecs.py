"""Each API's codec against the hub form itself: what a reader of any API may hand it (the
parts and events today's pairs do not reach: reasoning, misplaced parts), its short ways
against its long ones, and the codec table the exchange reads."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.apis import Kind, Schema
from extproc.translate import (
    anthropic_messages,
    hub,
    openai_chat,
    openai_responses,
)
from extproc.translate.hub import (
    END,
    Finished,
    Image,
    Message,
    Reasoning,
    ReasoningDelta,
    Request,
    Start,
    Stop,
    StreamError,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolResult,
    Untranslatable,
    Usage,
)
from extproc.translate.translation import CODECS, Translation, translatable

OPENAI, ANTHROPIC, OPENAI_RESPONSES = Schema.OPENAI, Schema.ANTHROPIC, Schema.OPENAI_RESPONSES


def test_the_codec_table_names_each_api_once() -> None:
    assert {schema: codec.SCHEMA for schema, codec in CODECS.items()} == {
        OPENAI: OPENAI,
        ANTHROPIC: ANTHROPIC,
        OPENAI_RESPONSES: OPENAI_RESPONSES,
    }
    assert [(c.KIND, c.SUFFIX) for c in CODECS.values()] == [
        (Kind.CHAT, "/chat/completions"),
        (Kind.MESSAGES, "/messages"),
        (Kind.RESPONSES, "/responses"),
    ]
    assert translatable(Kind.CHAT) and translatable(Kind.MESSAGES)
    assert translatable(Kind.RESPONSES)
    assert not translatable(Kind.EMBEDDINGS) and not translatable(Kind.COMPLETIONS)
    # The Anthropic SDK's protocol headers mean nothing to another API's backend.
    assert Translation(ANTHROPIC, OPENAI).client_headers == ("anthropic-version", "anthropic-beta")
    assert Translation(OPENAI, ANTHROPIC).client_headers == ()
    assert (Translation(OPENAI, ANTHROPIC).suffix, Translation(ANTHROPIC, OPENAI).suffix) == (
        "/messages",
        "/chat/completions",
    )


# -- requests from the hub form -----------------------------------------------------------

# A conversation as any API's reader may give it, reasoning and all.
HUB_REQUEST = Request(
    [
        Message("system", [Text("Be brief."), Text("Use metric units.")]),
        Message(
            "user",
            [
                Text("Weather here?"),
                Image(url="https://example.com/sky.jpg"),
                Image(media_type="image/png", data="iVBO"),
            ],
        ),
        Message(
            "assistant",
            [
                Reasoning("Look it up.", signature="sig"),
                Reasoning(redacted="opaque"),
                Reasoning("Another provider's thoughts, unsigned."),
                Text("Checking."),
                ToolCall("call_1", "weather", '{"city":"Paris"}'),
            ],
        ),
        Message("user", [ToolResult("call_1", [Text("18°C")]), Text("Thanks.")]),
    ],
    max_tokens=50,
)
WRITTEN = {
    OPENAI: {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief.\n\nUse metric units."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "user", "content": "Thanks."},
        ],
        "max_tokens": 50,
    },
    ANTHROPIC: {
        "model": "m",
        "system": [{"type": "text", "text": "Be brief.\n\nUse metric units."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/sky.jpg"},
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    # Anthropic checks thinking signatures: the unsigned reasoning stays out.
                    {"type": "thinking", "thinking": "Look it up.", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                    {"type": "text", "text": "Thanks."},
                ],
            },
        ],
        "max_tokens": 50,
    },
    OPENAI_RESPONSES: {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather here?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/sky.jpg",
                        "detail": "auto",
                    },
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBO",
                        "detail": "auto",
                    },
                ],
            },
            # OpenAI takes back only its own reasoning (its ids, its encrypted content).
            {"role": "assistant", "content": "Checking."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18°C"},
            {"role": "user", "content": "Thanks."},
        ],
        "instructions": "Be brief.\n\nUse metric units.",
        "max_output_tokens": 50,
        "store": False,
    },
}


@pytest.mark.parametrize("api", list(CODECS))
def test_each_writer_takes_the_whole_hub_form(api: Schema) -> None:
    assert CODECS[api].write_request(HUB_REQUEST, "m", 10) == WRITTEN[api]


MISPLACED = [
    # a turn holding a part the API has no place for there, and the param of the refusal
    (
        OPENAI,
        Message("assistant", [Image(url="u", path="input[3].content[0]")]),
        "input[3].content[0].type",
    ),
    (
        ANTHROPIC,
        Message("assistant", [ToolResult("c", [], path="contents[1].parts[0]")]),
        "contents[1].parts[0].type",
    ),
    (
        OPENAI,
        Message("assistant", [ToolResult("c", [], path="contents[1].parts[0]")]),
        "contents[1].parts[0].type",
    ),
    (ANTHROPIC, Message("user", [ToolCall("c", "f", "{}", path="input[2]")]), "input[2].type"),
    (OPENAI, Message("user", [ToolCall("c", "f", "{}", path="input[2]")]), "input[2].type"),
    (OPENAI, Message("user", [Reasoning("r", path="input[0]")]), "input[0].type"),
    (ANTHROPIC, Message("user", [Reasoning("r", path="input[0]")]), "input[0].type"),
    (
        OPENAI_RESPONSES,
        Message("assistant", [Image(url="u", path="messages[3].content[0]")]),
        "messages[3].content[0].type",
    ),
    (
        OPENAI_RESPONSES,
        Message("assistant", [ToolResult("c", [], path="contents[1].parts[0]")]),
        "contents[1].parts[0].type",
    ),
    (
        OPENAI_RESPONSES,
        Message("user", [ToolCall("c", "f", "{}", path="messages[2].content[1]")]),
        "messages[2].content[1].type",
    ),
    (
        OPENAI_RESPONSES,
        Message("user", [Reasoning("r", path="messages[0].content[0]")]),
        "messages[0].content[0].type",
    ),
]


def test_a_tool_result_with_images_keeps_them_for_the_responses_api() -> None:
    # Its function call outputs take images, where Chat Completions' tool messages do not.
    result = ToolResult("call_1", [Text("A chart:"), Image(url="https://x/c.png")], is_error=True)
    body = openai_responses.write_request(Request([Message("user", [result])]), "m", 10)
    assert body["input"] == [
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": [
                {"type": "input_text", "text": "Error:"},
                {"type": "input_text", "text": "A chart:"},
                {"type": "input_image", "image_url": "https://x/c.png", "detail": "auto"},
            ],
        }
    ]


@pytest.mark.parametrize(("api", "message", "param"), MISPLACED)
def test_a_part_the_api_cannot_place_is_refused_where_the_client_wrote_it(
    api: Schema, message: Message, param: str
) -> None:
    # Paths in another API's terms: whichever API the client spoke, the 400 names its field.
    with pytest.raises(Untranslatable) as caught:
        CODECS[api].write_request(Request([message]), "m", 10)
    assert (caught.value.error.code, caught.value.error.param) == ("unsupported_value", param)


# -- responses -----------------------------------------------------------------------------

THINKING_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "Short answer.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Yes."},
        {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}},
    ],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 4},
}


def test_reasoning_in_an_answer_is_carried_to_the_hub_typed() -> None:
    answer = anthropic_messages.read_response(THINKING_ANSWER)
    assert answer.parts == [
        Reasoning("Short answer.", "sig", path="content[0]"),
        Reasoning(redacted="opaque", path="content[1]"),
        Text("Yes."),
    ]
    # An OpenAI client gets the text (Chat Completions has no place for reasoning) ...
    completion = openai_chat.write_response(answer, created=1)
    assert completion["choices"][0]["message"]["content"] == "Yes."
    # ... an Anthropic client the blocks, as it would from Anthropic ...
    assert anthropic_messages.write_response(answer)["content"] == THINKING_ANSWER["content"][:3]
    # ... a Responses client the thinking's text as a reasoning summary (a redacted block
    # has none to show).
    response = openai_responses.write_response(answer, created=1)
    assert response["output"] == [
        {
            "id": "rs_msg_1_0",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "Short answer."}],
        },
        {
            "id": "msg_msg_1_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Yes.", "annotations": [], "logprobs": []}],
        },
    ]


# -- streams -------------------------------------------------------------------------------


def test_reasoning_deltas_open_and_close_thinking_blocks() -> None:
    encoder = anthropic_messages.encoder(True)
    out = encoder.events(
        [
            Start("1", "m"),
            ReasoningDelta("Let me"),
            ReasoningDelta(" think."),
            ReasoningDelta(signature="sig"),
            ReasoningDelta(redacted="opaque"),
            TextDelta("Yes."),
            Finished(Stop.END),
            END,
        ]
    )
    assert [
        (name, p.get("index"), p.get("delta") or p.get("content_block")) for name, p in out
    ] == [
        ("message_start", None, None),
        ("content_block_start", 0, {"type": "thinking", "thinking": ""}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "Let me"}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": " think."}),
        ("content_block_delta", 0, {"type": "signature_delta", "signature": "sig"}),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, {"type": "redacted_thinking", "data": "opaque"}),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, {"type": "text", "text": ""}),
        ("content_block_delta", 2, {"type": "text_delta", "text": "Yes."}),
        ("content_block_stop", 2, None),
        ("message_delta", None, {"stop_reason": "end_turn", "stop_sequence": None}),
        ("message_stop", None, None),
    ]


def test_anthropic_thinking_events_become_reasoning_deltas_openai_leaves_out() -> None:
    decoder = anthropic_messages.decoder()
    events = [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Hm."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "x"},
        },
    ]
    hub_events = [e for event in events for e in decoder.events(event)]
    assert hub_events == [
        ReasoningDelta("Hm."),
        ReasoningDelta(signature="s"),
        ReasoningDelta(redacted="x"),
    ]
    assert openai_chat.encoder(True).events(hub_events) == []


def test_reasoning_deltas_become_a_reasoning_summary_item() -> None:
    encoder = openai_responses.encoder(True, created=1)
    out = encoder.events(
        [
            Start("1", "m"),
            ReasoningDelta("Let me"),
            ReasoningDelta(" think."),
            ReasoningDelta(signature="sig"),  # no place for it: nothing written
            ReasoningDelta(redacted="opaque"),
            TextDelta("Yes."),
            Finished(Stop.END),
            END,
        ]
    )
    assert [
        (name, p.get("delta") or p.get("text") or p.get("item", {}).get("id")) for name, p in out
    ] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", "rs_1_0"),
        ("response.reasoning_summary_part.added", None),
        ("response.reasoning_summary_text.delta", "Let me"),
        ("response.reasoning_summary_text.delta", " think."),
        ("response.reasoning_summary_text.done", "Let me think."),
        ("response.reasoning_summary_part.done", None),
        ("response.output_item.done", "rs_1_0"),
        ("response.output_item.added", "msg_1_1"),
        ("response.content_part.added", None),
        ("response.output_text.delta", "Yes."),
        ("response.output_text.done", "Yes."),
        ("response.content_part.done", None),
        ("response.output_item.done", "msg_1_1"),
        ("response.completed", None),
    ]
    assert [p["sequence_number"] for _, p in out] == list(range(len(out)))
    assert out[-1][1]["response"]["output"][0]["summary"] == [
        {"type": "summary_text", "text": "Let me think."}
    ]


def test_usage_takes_only_the_counts_reported() -> None:
    usage = Usage(input=10, cache_read=5)
    usage.update(Usage(output=7))
    usage.update(Usage(input=12, output=None))
    assert usage == Usage(input=12, cache_read=5, cache_write=None, output=7)


# -- the short ways equal the long ones ----------------------------------------------------------

_text = st.sampled_from(["", "a", " wörld ☕", 'quote " and \\ and \x01'])
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | _text,
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "index",
                    "text",
                    "content",
                    "delta",
                    "choices",
                    "usage",
                    "finish_reason",
                    "tool_calls",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)
_openai_chunks = st.one_of(
    _json,
    st.builds(
        lambda text, reason, usage, index: {
            "id": "c",
            "model": "m",
            "choices": [{"index": index, "delta": {"content": text}, "finish_reason": reason}],
            **({"usage": usage} if usage is not False else {}),
        },
        _text | st.none(),
        st.sampled_from([None, "stop"]),
        st.sampled_from([False, None, {"prompt_tokens": 1}]),
        st.sampled_from([0, 1]),
    ),
    st.just("[DONE]"),
)
_anthropic_events = st.one_of(
    _json,
    st.builds(
        lambda kind, text: {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": kind, "text": text},
        },
        st.sampled_from(["text_delta", "thinking_delta"]),
        _text | st.none() | st.just(3),
    ),
    st.just(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f"},
        }
    ),
)
_responses_events = st.one_of(
    _json,
    st.builds(
        lambda kind, delta, index: {
            "type": kind,
            "item_id": "msg_1",
            "output_index": index,
            "content_index": 0,
            "delta": delta,
        },
        st.sampled_from(
            [
                "response.output_text.delta",
                "response.refusal.delta",
                "response.function_call_arguments.delta",
                "response.reasoning_summary_text.delta",
            ]
        ),
        _text | st.none() | st.just(3),
        st.sampled_from([0, 1]),
    ),
    st.just(
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""},
        }
    ),
    st.just({"type": "response.created", "response": {"id": "resp_1", "model": "m"}}),
)
PAYLOADS = {
    OPENAI: _openai_chunks,
    ANTHROPIC: _anthropic_events,
    OPENAI_RESPONSES: _responses_events,
}


@pytest.mark.parametrize("api", list(CODECS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_decoders_text_is_what_its_events_say(api: Schema, data: st.DataObject) -> None:
    short, long = CODECS[api].decoder(), CODECS[api].decoder()
    for payload in data.draw(st.lists(PAYLOADS[api], max_size=8)):
        text = short.text(payload)
        expected = long.events(payload)
        if text is None:
            assert short.events(payload) == expected
        else:
            assert expected == [TextDelta(text)]


_hub_events = st.lists(
    st.sampled_from(
        [
            Start("id", "m"),
            TextDelta("a"),
            TextDelta(' "☕"'),
            ToolCallDelta(0, "call", "f", ""),
            ToolCallDelta(0, None, None, '{"a"'),
            ToolCallDelta(1, "call2", "g", "{}"),
            ReasoningDelta("r"),
            ReasoningDelta(signature="s"),
            ReasoningDelta(redacted="x"),
            Usage(1, 2, 3, 4),
            Finished(Stop.TOOL_USE),
            StreamError("overloaded_error", None),
            END,
        ]
    ),
    max_size=12,
)


def _bytes(out: list[hub.Out]) -> bytes:
    return b"".join(
        (b"event: " + name.encode() + b"\n" if name else b"")
        + b"data: "
        + (payload.encode() if isinstance(payload, str) else orjson.dumps(payload))
        + b"\n\n"
        for name, payload in out
    )


@pytest.mark.parametrize("api", list(CODECS))
@settings(max_examples=200, deadline=None)
@given(events=_hub_events)
def test_an_encoders_text_bytes_are_its_events_bytes(api: Schema, events: list[Any]) -> None:
    short, long = CODECS[api].encoder(True), CODECS[api].encoder(True)
    if hasattr(short, "created"):
        long.created = short.created
    for event in events:
        raw = short.text(event.text) if isinstance(event, TextDelta) else None
        expected = _bytes(long.events([event]))
        assert (raw if raw is not None else _bytes(short.events([event]))) == expected
