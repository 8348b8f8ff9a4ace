"""A provider's stream that stops short, through a real Envoy, with both SDKs.

A whole answer whose stream lacks only its last event (servers that never send `[DONE]`)
reaches the client whole, ended as its API ends a stream.

Ended without its final event (the body ends cleanly, as HTTP goes): the service sees the
end and closes the client's protocol with an error event in the client's schema, which
each SDK raises as an API error. Cut mid-body (the connection closes or resets): Envoy
resets the client's stream, which no service can append to, and each SDK raises a
connection error. Either way the events that arrived reach the client first, and the
record holds the partial usage (estimated), `complete: false`."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.integration.conftest import GATEWAY_KEYS, Gateway

WORDS = "one two three four five six seven eight"
PROMPT = [{"role": "user", "content": WORDS}]
# (client SDK, model, key): each SDK to a backend of its own API and of the other one.
CASES = [
    ("openai", "gpt-4o-mini", "team-a"),
    ("openai", "claude-3-5-haiku", "team-b"),
    ("anthropic", "claude-3-5-haiku", "team-b"),
    ("anthropic", "gpt-4o-mini", "team-b"),
]
IDS = ["openai", "openai-to-anthropic", "anthropic", "anthropic-to-openai"]


def stream(gateway: Gateway, sdk: str, model: str, key: str, knob: str) -> tuple[str, Any, str]:
    """Stream until the SDK raises: (the text received, the error, the request id)."""
    text = ""
    headers = {knob: "4"}
    if sdk == "openai":
        raw = gateway.openai(key=GATEWAY_KEYS[key]).chat.completions.with_raw_response.create(
            model=model, messages=PROMPT, stream=True, extra_headers=headers
        )
        with pytest.raises(Exception) as caught:
            for chunk in raw.parse():
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        return text, caught.value, raw.headers["x-request-id"]
    claude = gateway.anthropic(key=GATEWAY_KEYS[key]).messages.with_raw_response.create(
        model=model, max_tokens=100, messages=PROMPT, stream=True, extra_headers=headers
    )
    with pytest.raises(Exception) as caught:
        for event in claude.parse():
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
    return text, caught.value, claude.headers["x-request-id"]


def check_partial_record(gateway: Gateway, request_id: str) -> None:
    record = gateway.record(request_id)
    assert record["status"] == 200
    usage = record["usage"]
    assert usage["complete"] is False
    assert "output_tokens" in usage["estimated"] and usage["output_tokens"] > 0


@pytest.mark.parametrize(("sdk", "model", "key"), CASES, ids=IDS)
def test_a_stream_ended_without_its_final_event_ends_in_an_api_error(
    gateway: Gateway, sdk: str, model: str, key: str
) -> None:
    text, error, request_id = stream(gateway, sdk, model, key, "x-mock-end-after")
    assert text and WORDS.startswith(text)  # what arrived before the end, in order
    message = "The provider ended the stream before the answer did; the answer is incomplete."
    if sdk == "openai":
        assert isinstance(error, openai.APIError) and not isinstance(error, openai.APIStatusError)
        assert error.code == "stream_incomplete" and error.message == message
    else:
        assert isinstance(error, anthropic.APIStatusError)
        assert error.body == {"type": "error", "error": {"type": "api_error", "message": message}}
    check_partial_record(gateway, request_id)


@pytest.mark.parametrize(("sdk", "model", "key"), CASES, ids=IDS)
def test_a_stream_cut_mid_body_ends_in_a_connection_error(
    gateway: Gateway, sdk: str, model: str, key: str
) -> None:
    text, error, request_id = stream(gateway, sdk, model, key, "x-mock-cut-after")
    assert text and WORDS.startswith(text)
    if sdk == "openai":
        assert isinstance(error, openai.APIConnectionError)
    else:
        # The Anthropic SDK lets its HTTP client's error through mid-stream.
        assert type(error).__name__ == "RemoteProtocolError"
        assert "incomplete chunked read" in str(error)
    check_partial_record(gateway, request_id)


@pytest.mark.parametrize(("sdk", "model", "key"), CASES, ids=IDS)
def test_a_whole_answer_without_its_last_event_reaches_the_sdk_whole(
    gateway: Gateway, sdk: str, model: str, key: str
) -> None:
    """Servers that never send `[DONE]` (or `message_stop`): the answer is whole, so the
    client's stream ends as its API's does, with no error."""
    headers = {"x-mock-omit-final": "1"}
    text, reasons = "", []
    if sdk == "openai":
        raw = gateway.openai(key=GATEWAY_KEYS[key]).chat.completions.with_raw_response.create(
            model=model, messages=PROMPT, stream=True, extra_headers=headers
        )
        for chunk in raw.parse():
            for choice in chunk.choices:
                text += choice.delta.content or ""
                reasons.append(choice.finish_reason)
        request_id = raw.headers["x-request-id"]
        path, body = "/v1/chat/completions", {"messages": PROMPT}
        last = b"data: [DONE]\n\n"
    else:
        claude = gateway.anthropic(key=GATEWAY_KEYS[key]).messages.with_raw_response.create(
            model=model, max_tokens=100, messages=PROMPT, stream=True, extra_headers=headers
        )
        for event in claude.parse():
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
            if event.type == "message_delta":
                reasons.append(event.delta.stop_reason)
        request_id = claude.headers["x-request-id"]
        path, body = "/v1/messages", {"messages": PROMPT, "max_tokens": 100}
        last = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert text == WORDS and reasons[-1] in ("stop", "end_turn")
    record = gateway.record(request_id)
    assert record["status"] == 200 and "error" not in record
    assert record["usage"]["complete"] is True and record["usage"]["estimated"] == []
    # The bytes the client got end with its API's last event, and hold no error.
    auth = (
        {"authorization": f"Bearer {GATEWAY_KEYS[key]}"}
        if sdk == "openai"
        else {"x-api-key": GATEWAY_KEYS[key], "anthropic-version": "2023-06-01"}
    )
    with gateway.http() as client:
        reply = client.post(
            path,
            json={"model": model, "stream": True, **body},
            headers={**headers, **auth},
        )
    assert reply.status_code == 200
    assert reply.content.endswith(last) and reply.content.count(last) == 1
    assert b"error" not in reply.content


def responses_events(
    gateway: Gateway, model: str, headers: dict[str, str]
) -> tuple[list[Any], str]:
    raw = gateway.openai(key=GATEWAY_KEYS["team-b"]).responses.with_raw_response.create(
        model=model, input=WORDS, stream=True, extra_headers=headers
    )
    return list(raw.parse()), raw.headers["x-request-id"]


@pytest.mark.parametrize("model", ["responses-model", "gpt-4o-mini"], ids=["native", "translated"])
def test_a_responses_stream_ended_early_fails_numbered_after_what_arrived(
    gateway: Gateway, model: str
) -> None:
    """The Responses API's stream fails as the API fails one: an `error` event, then
    `response.failed` for the same response, numbered after the events that arrived."""
    events, request_id = responses_events(gateway, model, {"x-mock-end-after": "6"})
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and WORDS.startswith(text)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    error, failed = events[-2:]
    assert (error.type, error.code) == ("error", "stream_incomplete")
    assert failed.type == "response.failed" and failed.response.id == events[0].response.id
    check_partial_record(gateway, request_id)


def test_a_responses_stream_without_its_last_event_is_cut_not_ended(gateway: Gateway) -> None:
    """Its last event carries the whole response, which only the provider can write: a
    Responses backend's stream without it fails, where a chat backend's answer without
    `[DONE]` (translated for the same client) ends whole."""
    headers = {"x-mock-omit-final": "1"}
    events, request_id = responses_events(gateway, "responses-model", headers)
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == WORDS
    assert gateway.record(request_id)["usage"]["complete"] is False
    events, request_id = responses_events(gateway, "gpt-4o-mini", headers)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == WORDS
    assert gateway.record(request_id)["usage"]["complete"] is True
