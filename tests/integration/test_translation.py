"""One API in front of both providers, through a real Envoy with the official SDKs: the
OpenAI SDK on an Anthropic-schema model, the Anthropic SDK on an OpenAI-schema model."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.conftest import GATEWAY_KEYS, Gateway

QUESTION = "What is the weather in Paris?"
OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a place",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    }
]
ANTHROPIC_TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a place",
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
    }
]


def openai_client(gateway: Gateway) -> openai.OpenAI:
    return gateway.openai(key=GATEWAY_KEYS["team-b"])


def test_openai_sdk_on_an_anthropic_model(gateway: Gateway) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="claude-3-5-haiku",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
        max_tokens=100,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == QUESTION
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude-3-5-haiku"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    record = gateway.record(raw.headers["x-request-id"])
    assert record["translated"] == "openai->anthropic"
    assert record["usage"]["output_tokens"] == completion.usage.completion_tokens
    assert record["usage"]["estimated"] == []


def test_openai_sdk_streams_from_an_anthropic_model(gateway: Gateway) -> None:
    chunks = list(
        openai_client(gateway).chat.completions.create(
            model="claude-3-5-haiku",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == QUESTION
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_tool_call_round_trip_on_an_anthropic_model(
    gateway: Gateway, stream: bool
) -> None:
    client = openai_client(gateway)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            model="claude-3-5-haiku", messages=messages, tools=OPENAI_TOOLS, stream=True
        ):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] = call.id or entry["id"]
                    if call.function is not None:
                        entry["name"] = call.function.name or entry["name"]
                        entry["arguments"] += call.function.arguments or ""
        assert finish == "tool_calls"
        call_id, name, arguments = calls[0]["id"], calls[0]["name"], calls[0]["arguments"]
    else:
        completion = client.chat.completions.create(
            model="claude-3-5-haiku", messages=messages, tools=OPENAI_TOOLS
        )
        assert completion.choices[0].finish_reason == "tool_calls"
        tool_call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
        call_id = tool_call.id
        name, arguments = tool_call.function.name, tool_call.function.arguments  # type: ignore[union-attr]
    assert name == "get_weather" and json.loads(arguments) == {"text": QUESTION}
    assert call_id.startswith("toolu_")
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18 degrees"},
    ]
    answer = client.chat.completions.create(
        model="claude-3-5-haiku", messages=messages, tools=OPENAI_TOOLS
    )
    assert answer.choices[0].message.content == "tool result: 18 degrees"


def test_anthropic_sdk_on_an_openai_model(gateway: Gateway) -> None:
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="gpt-4o-mini",
        system="Be brief.",
        max_tokens=100,
        messages=[{"role": "user", "content": QUESTION}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == QUESTION
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    record = gateway.record(raw.headers["x-request-id"])
    assert record["translated"] == "anthropic->openai"
    assert record["usage"]["input_tokens"] == message.usage.input_tokens


def test_anthropic_sdk_streams_from_an_openai_model(gateway: Gateway) -> None:
    with gateway.anthropic().messages.stream(
        model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == QUESTION
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_tool_use_round_trip_on_an_openai_model(
    gateway: Gateway, stream: bool
) -> None:
    client = gateway.anthropic()
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    if stream:
        with client.messages.stream(
            model="gpt-4o-mini", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
        ) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(
            model="gpt-4o-mini", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
        )
    assert message.stop_reason == "tool_use"
    [block] = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "get_weather" and block.input == {"text": QUESTION}
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in message.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "18 degrees"}],
        },
    ]
    answer = client.messages.create(
        model="gpt-4o-mini", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
    )
    assert answer.content[0].type == "text"
    assert answer.content[0].text == "tool result: 18 degrees"


def test_provider_errors_arrive_in_the_clients_schema(gateway: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        openai_client(gateway).chat.completions.create(
            model="claude-3-5-haiku",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429"},
        )
    assert limited.value.message.endswith("mock failure 429")
    assert limited.value.type == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError) as failed:
        gateway.anthropic().messages.create(
            model="gpt-4o-mini",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "503"},
        )
    assert failed.value.status_code == 503
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    assert failed.value.body["error"]["message"] == "mock failure 503"  # type: ignore[index]


def test_what_the_backend_cannot_do_is_a_clear_400(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gateway).chat.completions.create(
            model="claude-3-5-haiku", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "n"


def test_models_are_listed_in_each_clients_format(gateway: Gateway) -> None:
    openai_ids = {m.id for m in openai_client(gateway).models.list()}
    claude = gateway.anthropic()
    page = claude.models.list()
    anthropic_ids = {m.id for m in page.data}
    assert anthropic_ids == openai_ids and "gpt-4o-mini" in anthropic_ids
    assert all(m.type == "model" and m.created_at.year >= 2026 for m in page.data)
    assert claude.models.retrieve("gpt-4o-mini").display_name == "gpt-4o-mini"
    # A name a pattern route serves is retrieved as a request for it would be routed.
    assert claude.models.retrieve("claude-3-5-haiku-latest").id == "claude-3-5-haiku-latest"
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.models.retrieve("gpt-9")
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_falls_back_from_an_openai_to_an_anthropic_backend(
    gateway: Gateway, stream: bool
) -> None:
    """The first backend (OpenAI schema) answers 503; the fallback speaks Anthropic's API:
    its attempt gets a translated body, the client a translated answer."""
    client = gateway.openai()
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    if stream:
        chunks = list(client.chat.completions.create(model="mixed", messages=messages, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == QUESTION
        assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    else:
        raw = client.chat.completions.with_raw_response.create(model="mixed", messages=messages)
        completion = raw.parse()
        assert completion.choices[0].message.content == QUESTION
        assert completion.model == "claude-mixed"
        record = gateway.record(raw.headers["x-request-id"])
        assert record["attempt"] == 2 and record["backend"] == "anthropic"
        assert record["translated"] == "openai->anthropic"
        assert raw.headers["x-mock-path"] == "/v1/messages"  # the attempt's own endpoint
        assert record["usage"]["estimated"] == []


def test_anthropic_sdk_on_a_chain_across_apis(gateway: Gateway) -> None:
    """The same chain seen from the Anthropic SDK: the failing first attempt is translated
    to OpenAI's API, the answering fallback is not."""
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="mixed", max_tokens=50, messages=[{"role": "user", "content": QUESTION}]
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == QUESTION
    record = gateway.record(raw.headers["x-request-id"])
    assert record["attempt"] == 2 and "translated" not in record
    # The failed first attempt reached the OpenAI-schema backend in its own API.
    assert message.model == "claude-mixed"


def test_openai_sdk_tool_call_on_a_chain_across_apis(gateway: Gateway) -> None:
    completion = gateway.openai().chat.completions.create(
        model="mixed", messages=[{"role": "user", "content": QUESTION}], tools=OPENAI_TOOLS
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"text": QUESTION}  # type: ignore[union-attr]


def test_azure_openai_deployment_api(gateway: Gateway) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="azure-gpt", messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw.parse().choices[0].message.content == QUESTION
    assert raw.headers["x-mock-path"] == (
        "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    )
    sent = raw.headers["x-mock-headers"].split(",")
    assert "api-key" in sent and "authorization" not in sent
    # The Anthropic SDK reaches the same deployment through translation.
    message = gateway.anthropic().messages.create(
        model="azure-gpt", max_tokens=20, messages=[{"role": "user", "content": QUESTION}]
    )
    assert message.content[0].type == "text" and message.content[0].text == QUESTION


def test_the_anthropic_sdk_counts_tokens_for_a_model_of_either_api(gateway: Gateway) -> None:
    claude = gateway.anthropic()
    messages: list[Any] = [{"role": "user", "content": "Count the tokens of this sentence."}]
    # An Anthropic backend counts them itself (the mock provider's own count) ...
    raw = claude.messages.with_raw_response.count_tokens(
        model="claude-3-5-haiku", messages=messages, system="Be brief."
    )
    counted = raw.parse()
    assert counted.input_tokens > 0 and "x-extproc-estimate" not in raw.headers
    record = gateway.record(raw.headers["x-request-id"])
    assert record["backend"] == "anthropic" and "usage" not in record
    # ... for an OpenAI backend the gateway counts them offline, and says so.
    raw = claude.messages.with_raw_response.count_tokens(
        model="gpt-4o-mini", messages=messages, system="Be brief."
    )
    assert raw.headers["x-extproc-estimate"] == "offline"
    assert raw.parse().input_tokens > 0
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.count_tokens(model="claude-3-5-haiku", messages=[])
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
