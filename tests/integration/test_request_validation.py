"""Request validation through a real Envoy, as each official SDK sees it: the provider's 400,
naming the field, before any provider is called."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.integration.conftest import GATEWAY_KEYS, Gateway

TAG = {"x-mock-tag": "refused-by-validation"}
HI = [{"role": "user", "content": "hi"}]
PNG = "data:image/png;base64,iVBORw0KGgo="


def served(gateway: Gateway) -> list[int]:
    """Answers the mock provider served to requests carrying TAG."""
    stats = httpx.get(f"http://127.0.0.1:{gateway.mock_port}/mock/stats").json()
    return list(stats.get(TAG["x-mock-tag"], [0, 0, 0]))


@pytest.mark.parametrize(
    ("model", "fields", "param", "code"),
    [
        ("gpt-4o-mini", {"max_tokens": "abc"}, "max_tokens", "invalid_type"),
        ("gpt-4o-mini", {"max_tokens": [1]}, "max_tokens", "invalid_type"),
        ("gpt-4o-mini", {"max_tokens": -5}, "max_tokens", "integer_below_min_value"),
        ("gpt-4o-mini", {"n": "2"}, "n", "invalid_type"),
        ("gpt-4o-mini", {"temperature": 3}, "temperature", "decimal_above_max_value"),
        ("gpt-4o-mini", {"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
        (
            "gpt-4o-mini",
            {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"detail": "low"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
            "missing_required_parameter",
        ),
        # A model served by an Anthropic backend: refused in the client's schema, before
        # the translation.
        (
            "claude-x",
            {"messages": [{"role": "user"}]},
            "messages[0].content",
            "missing_required_parameter",
        ),
        ("claude-x", {"top_p": 1.5}, "top_p", "decimal_above_max_value"),
    ],
)
def test_openai_sdk_gets_openais_400_and_no_provider_is_called(
    gateway: Gateway, model: str, fields: dict[str, Any], param: str, code: str
) -> None:
    client = gateway.openai(key=GATEWAY_KEYS["team-b"])
    before = served(gateway)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            **{"model": model, "messages": HI, **fields}, extra_headers=TAG
        )
    assert (raised.value.code, raised.value.param) == (code, param)
    assert raised.value.type == "invalid_request_error"
    assert served(gateway) == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_tokens": "abc"}, "max_tokens: Input should be a valid integer"),
        # Sampling fields the SDK no longer types (deprecated by Anthropic), as older
        # clients send them.
        (
            {"extra_body": {"temperature": 1.5}},
            "temperature: Input should be less than or equal to 1",
        ),
        ({"extra_body": {"top_k": -1}}, "top_k: Input should be greater than or equal to 0"),
        ({"system": 5}, "system: Input should be a valid string or a valid list"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "42"}]}]},
            "messages.0.content.0.tool_use_id: Field required",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}
                ]
            },
            "messages.0.content.0.source.media_type: Field required",
        ),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name: Field required"),
    ],
)
def test_anthropic_sdk_gets_anthropics_400_and_no_provider_is_called(
    gateway: Gateway, fields: dict[str, Any], message: str
) -> None:
    before = served(gateway)
    with pytest.raises(anthropic.BadRequestError) as raised:
        gateway.anthropic().messages.create(
            **{"model": "claude-x", "max_tokens": 64, "messages": HI, **fields}, extra_headers=TAG
        )
    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(message), body
    assert served(gateway) == before


def test_valid_requests_with_every_part_pass_to_the_provider(gateway: Gateway) -> None:
    """The same SDKs' well-formed multimodal and tool requests are served (nothing the
    published APIs allow is refused)."""
    before = served(gateway)
    reply = gateway.openai().chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                ],
            },
        ],
        max_completion_tokens=16,
        n=1,
        temperature=2,
        top_p=1,
        stop=["END"],
        seed=7,
        tools=[
            {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}
        ],
        tool_choice="auto",
        extra_headers=TAG,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "look"  # type: ignore[union-attr]
    answer = gateway.anthropic().messages.create(
        model="claude-x",
        max_tokens=16,
        system=[{"type": "text", "text": "be brief"}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            }
        ],
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        extra_body={"temperature": 1, "top_k": 5},
        extra_headers=TAG,
    )
    assert answer.content[0].text == "and this?"  # type: ignore[union-attr]
    assert served(gateway)[0] == before[0] + 2


VIDEO = {"type": "video_url", "video_url": {"url": "https://media.test/clip.mp4"}}
AUDIO = {"type": "audio_url", "audio_url": {"url": "https://media.test/clip.wav"}}
NEW_BLOCK = {"type": "video", "source": {"type": "url", "url": "https://media.test/clip.mp4"}}


def test_parts_the_gateway_does_not_know_reach_a_backend_of_the_clients_api(
    gateway: Gateway,
) -> None:
    """Part types OpenAI-compatible servers take (vLLM's `video_url`, `audio_url`) and a
    block type newer than the gateway pass as sent to a backend of the client's API: that
    backend answers them."""
    asked = [{"type": "text", "text": "what happens?"}, VIDEO, AUDIO]
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": asked}], extra_headers=TAG
    )
    assert raw.headers["x-mock-part-types"] == "text,video_url,audio_url"
    assert raw.parse().choices[0].message.content == "what happens?"
    answer = gateway.anthropic().messages.with_raw_response.create(
        model="claude-x",
        max_tokens=16,
        messages=[{"role": "user", "content": [{"type": "text", "text": "and now?"}, NEW_BLOCK]}],
        extra_headers=TAG,
    )
    assert answer.headers["x-mock-part-types"] == "text,video"


def test_parts_the_gateway_does_not_know_are_refused_where_they_must_be_translated(
    gateway: Gateway,
) -> None:
    """The same parts for a model behind the other API: a 400 in the client's schema naming
    the part, and no provider called."""
    before = served(gateway)
    client = gateway.openai(key=GATEWAY_KEYS["team-b"])
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="claude-x",
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, VIDEO]}],
            extra_headers=TAG,
        )
    assert (raised.value.code, raised.value.param) == (
        "unsupported_value",
        "messages[0].content[1].type",
    )
    assert "'video_url'" in raised.value.message
    with pytest.raises(anthropic.BadRequestError) as refused:
        gateway.anthropic().messages.create(
            model="gpt-4o-mini",
            max_tokens=16,
            messages=[{"role": "user", "content": [NEW_BLOCK]}],
            extra_headers=TAG,
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert "'messages[0].content[0].type'" in body["error"]["message"]
    assert "'video'" in body["error"]["message"]
    assert served(gateway) == before
