"""The response cache through a real Envoy, read by the official SDKs."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.conftest import GATEWAY_KEYS, Gateway


def question() -> str:
    return f"What is the answer to question {uuid.uuid4().hex[:8]}?"


def test_json_answer_is_cached_and_replayed_as_a_stream(gateway: Gateway) -> None:
    client = gateway.openai()
    messages = [{"role": "user", "content": question()}]
    first = client.chat.completions.with_raw_response.create(
        model="cached-gpt", messages=messages, temperature=0
    )
    assert "x-mock-path" in first.headers and "x-extproc-cache" not in first.headers
    second = client.chat.completions.with_raw_response.create(
        model="cached-gpt", messages=messages, temperature=0
    )
    # Served by the service: the provider was not called, the bytes are the same.
    assert second.headers["x-extproc-cache"] == "hit" and "x-mock-path" not in second.headers
    assert second.http_response.content == first.http_response.content
    record = gateway.record(second.headers["x-request-id"])
    assert record["usage"]["cached"] is True and record["usage"]["cost"] == 0
    assert record["usage"]["output_tokens"] == first.parse().usage.completion_tokens  # type: ignore[union-attr]
    # A streaming client gets the same answer as a well-formed stream.
    chunks = list(
        client.chat.completions.create(
            model="cached-gpt",
            messages=messages,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.parse().choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_anthropic_answers_replay_for_the_anthropic_sdk(gateway: Gateway) -> None:
    client = gateway.anthropic()
    messages = [{"role": "user", "content": question()}]
    first = client.messages.create(model="cached-claude", max_tokens=50, messages=messages)
    with client.messages.stream(model="cached-claude", max_tokens=50, messages=messages) as stream:
        replayed = stream.get_final_message()
        assert stream.response.headers["x-extproc-cache"] == "hit"
    assert replayed.content[0].text == first.content[0].text  # type: ignore[union-attr]
    assert replayed.stop_reason == first.stop_reason
    assert replayed.usage.output_tokens == first.usage.output_tokens


def chat(gateway: Gateway, content: str, **headers: str) -> httpx.Response:
    return gateway.http().post(
        "/v1/chat/completions",
        json={
            "model": "cached-gpt",
            "temperature": 0,
            "messages": [{"role": "user", "content": content}],
        },
        headers={"authorization": f"Bearer {GATEWAY_KEYS['team-a']}", **headers},
    )


def test_bypass_refresh_errors_and_sampling(gateway: Gateway) -> None:
    prompt = question()
    assert "x-mock-path" in chat(gateway, prompt).headers
    assert chat(gateway, prompt).headers.get("x-extproc-cache") == "hit"
    # no-cache: the provider is asked again (and the answer stored anew).
    refreshed = chat(gateway, prompt, **{"cache-control": "no-cache"})
    assert "x-mock-path" in refreshed.headers and "x-extproc-cache" not in refreshed.headers
    # An error answer is not stored: the next request reaches the provider.
    failing = question()
    assert chat(gateway, failing, **{"x-mock-status": "500"}).status_code == 500
    assert "x-mock-path" in chat(gateway, failing).headers
    # Not deterministic (temperature 0.7): never cached.
    for _ in range(2):
        response = gateway.http().post(
            "/v1/chat/completions",
            json={
                "model": "cached-gpt",
                "temperature": 0.7,
                "messages": [{"role": "user", "content": prompt}],
            },
            headers={"authorization": f"Bearer {GATEWAY_KEYS['team-a']}"},
        )
        assert "x-mock-path" in response.headers
    metrics = httpx.get(gateway.metrics_url).text
    assert 'extproc_cache_lookups_total{result="hit"}' in metrics


def test_a_streamed_answer_is_stored_for_json_and_stream_clients(gateway: Gateway) -> None:
    client = gateway.openai()
    messages = [{"role": "user", "content": question()}]
    streamed = list(
        client.chat.completions.create(
            model="cached-gpt", messages=messages, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert all(c.usage is None for c in streamed)  # the client did not ask for usage
    raw = client.chat.completions.with_raw_response.create(
        model="cached-gpt", messages=messages, temperature=0
    )
    assert raw.headers["x-extproc-cache"] == "hit"
    answer = raw.parse()
    assert answer.choices[0].message.content == text
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    claude = gateway.anthropic()
    prompt = [{"role": "user", "content": question()}]
    with claude.messages.stream(model="cached-claude", max_tokens=50, messages=prompt) as stream:
        first = stream.get_final_message()
    raw_message = claude.messages.with_raw_response.create(
        model="cached-claude", max_tokens=50, messages=prompt
    )
    assert raw_message.headers["x-extproc-cache"] == "hit"
    assert raw_message.parse().content[0].text == first.content[0].text  # type: ignore[union-attr]


def test_responses_answers_are_stored_and_replayed_for_the_sdks_stream_helper(
    gateway: Gateway,
) -> None:
    client = gateway.openai(GATEWAY_KEYS["team-b"])
    prompt = question()
    with client.responses.stream(model="cached-responses", input=prompt) as stream:
        first = stream.get_final_response()
    # The stream was stored as the response its last event carried.
    raw = client.responses.with_raw_response.create(model="cached-responses", input=prompt)
    assert raw.headers["x-extproc-cache"] == "hit" and "x-mock-path" not in raw.headers
    answer = raw.parse()
    assert (answer.id, answer.output_text) == (first.id, first.output_text)
    record = gateway.record(raw.headers["x-request-id"])
    assert record["usage"]["cached"] is True
    assert record["usage"]["output_tokens"] == first.usage.output_tokens  # type: ignore[union-attr]
    # A streaming client gets it replayed as the numbered events the SDK accumulates (the
    # mock names each answer it writes: the same id is the stored answer).
    with client.responses.stream(model="cached-responses", input=prompt) as stream:
        numbers = [event.sequence_number for event in stream]
        replayed = stream.get_final_response()
    assert numbers == list(range(len(numbers)))
    assert replayed.output_text == first.output_text and replayed.id == first.id
