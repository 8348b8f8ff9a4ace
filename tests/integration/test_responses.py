"""The Responses API as a front door, through a real Envoy with the official SDKs: on a
backend that takes it as it is (OpenAI's own), on a Chat Completions backend and on an
Anthropic backend (translated, the gateway keeping the conversation), and the other way: the
Chat Completions and Messages APIs on a backend that speaks only the Responses API."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.integration.conftest import GATEWAY_KEYS, Gateway

QUESTION = "What is the weather in Paris?"
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a place",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    }
]
# (model, tenant, what the record says of translation: None when sent as it is)
BACKENDS = [
    ("gpt-4o-mini", "team-a", "openai_responses->openai"),
    ("claude-3-5-haiku", "team-b", "openai_responses->anthropic"),
    ("gpt-native", "team-a", None),
]
IDS = ["chat-completions-backend", "anthropic-backend", "responses-backend"]
# The backends whose conversations the gateway keeps.
KEPT = BACKENDS[:2]


def client(gateway: Gateway, tenant: str) -> openai.OpenAI:
    return gateway.openai(key=GATEWAY_KEYS[tenant])


@pytest.mark.parametrize(("model", "tenant", "translated"), BACKENDS, ids=IDS)
def test_a_response(gateway: Gateway, model: str, tenant: str, translated: str | None) -> None:
    raw = client(gateway, tenant).responses.with_raw_response.create(
        model=model, input=QUESTION, instructions="Be brief.", max_output_tokens=100
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == QUESTION
    assert response.usage is not None and response.usage.output_tokens > 0
    record = gateway.record(raw.headers["x-request-id"])
    assert record.get("translated") == translated
    assert record["usage"]["output_tokens"] == response.usage.output_tokens
    assert record["usage"]["estimated"] == []
    if translated is not None:
        assert response.id == record["conversation"]["response_id"]
        assert response.id.startswith("resp_") and len(response.id) > 40
    else:
        assert "conversation" not in record  # the backend keeps its own


@pytest.mark.parametrize(("model", "tenant", "translated"), BACKENDS, ids=IDS)
def test_a_streamed_response(
    gateway: Gateway, model: str, tenant: str, translated: str | None
) -> None:
    with client(gateway, tenant).responses.stream(model=model, input=QUESTION) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == QUESTION == final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize(("model", "tenant", "translated"), BACKENDS, ids=IDS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_function_call_round_trip(
    gateway: Gateway, model: str, tenant: str, translated: str | None, stream: bool
) -> None:
    sdk = client(gateway, tenant)
    if stream:
        with sdk.responses.stream(model=model, input=QUESTION, tools=TOOLS) as events:
            first = events.get_final_response()
    else:
        first = sdk.responses.create(model=model, input=QUESTION, tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"text": QUESTION}
    answer = sdk.responses.create(
        model=model,
        tools=TOOLS,
        input=[
            {"role": "user", "content": QUESTION},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": calls[0].name,
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees"},
        ],
    )
    assert answer.output_text == "tool result: 18 degrees"


@pytest.mark.parametrize(("model", "tenant", "translated"), KEPT, ids=IDS[:2])
def test_a_conversation_of_three_turns_kept_by_the_gateway(
    gateway: Gateway, model: str, tenant: str, translated: str
) -> None:
    sdk = client(gateway, tenant)
    previous: str | None = None
    prompts: list[int] = []
    for turn, text in enumerate(["My name is Ann.", "I live in Paris.", "Where do I live?"]):
        raw = sdk.responses.with_raw_response.create(
            model=model,
            input=text,
            **({"previous_response_id": previous} if previous else {}),  # type: ignore[arg-type]
        )
        response = raw.parse()
        assert response.output_text == text
        assert response.usage is not None
        prompts.append(response.usage.input_tokens)
        record = gateway.record(raw.headers["x-request-id"])
        # Each turn adds the user's message and the answer to what the next one sends.
        assert record["conversation"]["recalled"] == 2 * turn
        assert record["conversation"]["items"] == 2 * turn + 1
        previous = response.id
    assert prompts[0] < prompts[1] < prompts[2]  # the backend read the whole conversation
    assert previous is not None
    kept = sdk.responses.retrieve(previous)
    assert kept.id == previous and kept.output_text == "Where do I live?"
    items = sdk.responses.input_items.list(previous, order="asc")
    assert [item.type for item in items.data] == ["message"]
    assert items.data[0].content[0].text == "Where do I live?"  # type: ignore[union-attr]
    deleted = sdk.responses.delete(previous)
    assert deleted is None  # the SDK returns nothing for a 200
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(previous)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=model, input="And now?", previous_response_id=previous)
    assert caught.value.code == "previous_response_not_found"


def test_a_backends_own_conversation_passes_through(gateway: Gateway) -> None:
    sdk = client(gateway, "team-a")
    previous: str | None = None
    prompts: list[int] = []
    for text in ["My name is Ann.", "I live in Paris.", "Where do I live?"]:
        raw = sdk.responses.with_raw_response.create(
            model="gpt-native",
            input=text,
            **({"previous_response_id": previous} if previous else {}),  # type: ignore[arg-type]
        )
        response = raw.parse()
        assert response.output_text == text and response.usage is not None
        prompts.append(response.usage.input_tokens)
        assert "conversation" not in gateway.record(raw.headers["x-request-id"])
        previous = response.id
    assert prompts[0] < prompts[1] < prompts[2]  # the backend kept and read the conversation
    assert previous is not None and previous.startswith("resp_mock")


def test_a_stream_continues_a_conversation(gateway: Gateway) -> None:
    sdk = client(gateway, "team-a")
    with sdk.responses.stream(model="gpt-4o-mini", input="My name is Ann.") as stream:
        first = stream.get_final_response()
    with sdk.responses.stream(
        model="gpt-4o-mini", input="Who am I?", previous_response_id=first.id
    ) as stream:
        second = stream.get_final_response()
    assert second.output_text == "Who am I?"
    assert sdk.responses.retrieve(second.id).output_text == "Who am I?"
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens


def test_a_backends_own_answer_is_reached_by_its_tenant_only(gateway: Gateway) -> None:
    mine = client(gateway, "team-a").responses.create(model="gpt-native", input=QUESTION)
    assert mine.id.startswith("resp_mock")  # the backend's own id
    assert client(gateway, "team-a").responses.retrieve(mine.id).output_text == QUESTION
    with pytest.raises(openai.NotFoundError):  # the same provider key, another tenant
        client(gateway, "team-b").responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        client(gateway, "team-b").responses.delete(mine.id)
    client(gateway, "team-a").responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        client(gateway, "team-a").responses.retrieve(mine.id)


def test_store_false_keeps_nothing(gateway: Gateway) -> None:
    sdk = client(gateway, "team-a")
    response = sdk.responses.create(model="gpt-4o-mini", input=QUESTION, store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_another_tenants_conversation_is_not_found(gateway: Gateway) -> None:
    mine = client(gateway, "team-b").responses.create(model="gpt-4o-mini", input=QUESTION)
    theirs = client(gateway, "team-a")
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(mine.id)
    with pytest.raises(openai.BadRequestError) as caught:
        theirs.responses.create(model="gpt-4o-mini", input="Hi", previous_response_id=mine.id)
    assert caught.value.code == "previous_response_not_found"
    # Still there for its own tenant.
    assert client(gateway, "team-b").responses.retrieve(mine.id).output_text == QUESTION


def test_stored_response_paths_refuse_what_they_do_not_serve(gateway: Gateway) -> None:
    http = gateway.http()
    headers = {"authorization": f"Bearer {GATEWAY_KEYS['team-a']}"}
    posted = http.post(f"{gateway.url}/v1/responses/resp_abc", headers=headers, json={})
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, DELETE"
    nested = http.get(f"{gateway.url}/v1/responses/a/b/c", headers=headers)
    assert nested.status_code == 404 and nested.json()["error"]["code"] == "unknown_url"
    weird = http.get(f"{gateway.url}/v1/responses/{'x' * 300}", headers=headers)
    assert weird.status_code == 404 and weird.json()["error"]["type"] == "invalid_request_error"
    anonymous = http.get(
        f"{gateway.url}/v1/responses/resp_abc", headers={"authorization": "Bearer sk-wrong"}
    )
    assert anonymous.status_code == 401


def test_a_built_in_tool_is_a_clear_400_on_a_translated_backend(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway, "team-a").responses.create(
            model="gpt-4o-mini", input=QUESTION, tools=[{"type": "web_search"}]
        )
    assert "tools[0].type" in str(caught.value)


def test_chat_completions_and_messages_on_a_responses_only_backend(gateway: Gateway) -> None:
    raw = client(gateway, "team-b").chat.completions.with_raw_response.create(
        model="responses-model", messages=[{"role": "user", "content": QUESTION}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == QUESTION
    assert gateway.record(raw.headers["x-request-id"])["translated"] == "openai->openai_responses"
    chunks = list(
        client(gateway, "team-b").chat.completions.create(
            model="responses-model",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == QUESTION
    message = gateway.anthropic().messages.create(
        model="responses-model", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
    )
    assert message.content[0].text == QUESTION  # type: ignore[union-attr]
    assert message.usage.output_tokens > 0


def test_input_tokens_are_counted_by_the_backend_or_estimated(gateway: Gateway) -> None:
    sdk = client(gateway, "team-a")
    raw = sdk.responses.input_tokens.with_raw_response.count(model="gpt-native", input=QUESTION)
    counted = raw.parse()
    assert counted.input_tokens > 0 and "x-extproc-estimate" not in raw.headers
    raw = sdk.responses.input_tokens.with_raw_response.count(model="gpt-4o-mini", input=QUESTION)
    estimated = raw.parse()
    assert raw.headers["x-extproc-estimate"] == "offline"
    assert abs(estimated.input_tokens - counted.input_tokens) <= 8
    record = gateway.record(raw.headers["x-request-id"])
    assert "usage" not in record  # a count is never charged


def test_counts_are_translated_between_the_apis_that_have_them(gateway: Gateway) -> None:
    # A Responses client on an Anthropic model: Anthropic's count, in the client's API.
    raw = client(gateway, "team-b").responses.input_tokens.with_raw_response.count(
        model="claude-3-5-haiku", input=QUESTION, instructions="Be brief."
    )
    counted = raw.parse()
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0
    assert "x-extproc-estimate" not in raw.headers
    assert gateway.record(raw.headers["x-request-id"])["translated"] == (
        "openai_responses->anthropic"
    )
    # An Anthropic client on a Responses-only model: its input_tokens, in Anthropic's API.
    raw_message = gateway.anthropic().messages.with_raw_response.count_tokens(
        model="responses-model", messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw_message.parse().input_tokens > 0
    assert "x-extproc-estimate" not in raw_message.headers


def test_a_cut_stream_is_recorded_with_its_usage(gateway: Gateway) -> None:
    raw = client(gateway, "team-a").responses.with_raw_response.create(
        model="gpt-4o-mini",
        input="one two three four five six seven eight",
        stream=True,
        extra_headers={"x-mock-cut-after": "4"},
    )
    with pytest.raises(Exception):  # noqa: B017 - the SDK's error for a reset stream
        for _ in raw.parse():
            pass
    record = gateway.record(raw.headers["x-request-id"])
    assert record["status"] == 200
    assert record["usage"]["complete"] is False
    assert record["usage"]["output_tokens"] > 0 and "output_tokens" in record["usage"]["estimated"]
