"""The mock provider's Responses API and both APIs' token counts, read by the official SDKs
pointed straight at it: `client.responses.create`, `client.responses.stream`,
`client.responses.input_tokens.count`, and Anthropic's `messages.count_tokens`."""

from __future__ import annotations

import anthropic
import openai
import orjson
from aiohttp import ClientSession

from extproc.devtools.mock_provider import count_tokens
from tests.unit.test_mock_provider import sse_events

QUESTION = "What is the weather in Paris today?"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a place",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    "strict": False,
}


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="k", base_url=f"{url}/v1", max_retries=0)


async def test_a_response_echoes_the_question(mock_url: str) -> None:
    response = await client(mock_url).responses.create(
        model="gpt-mock", instructions="Be brief.", input=QUESTION
    )
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == QUESTION
    assert response.model == "gpt-mock" and response.instructions == "Be brief."
    assert response.usage is not None
    prompt = count_tokens(QUESTION) + count_tokens("Be brief.")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        prompt,
        count_tokens(QUESTION),
    )


async def test_a_function_call_round_trip(mock_url: str) -> None:
    openai_client = client(mock_url)
    first = await openai_client.responses.create(
        model="gpt-mock", input=QUESTION, tools=[WEATHER_TOOL]
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"text": QUESTION}
    second = await openai_client.responses.create(
        model="gpt-mock",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": QUESTION},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "18°C"},
        ],
    )
    assert second.output_text == "tool result: 18°C"


async def test_a_response_streams_as_typed_events(mock_url: str) -> None:
    async with client(mock_url).responses.stream(model="gpt-mock", input=QUESTION) as events:
        seen = [event async for event in events]
        final = await events.get_final_response()
    assert [event.sequence_number for event in seen] == list(range(len(seen)))
    kinds = [event.type for event in seen]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [event.delta for event in seen if event.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == QUESTION == final.output_text
    assert final.usage is not None and final.usage.output_tokens == count_tokens(QUESTION)


async def test_a_function_call_streams_its_arguments(mock_url: str) -> None:
    async with client(mock_url).responses.stream(
        model="gpt-mock", input=QUESTION, tools=[WEATHER_TOOL]
    ) as events:
        seen = [event async for event in events]
        final = await events.get_final_response()
    arguments = [e.delta for e in seen if e.type == "response.function_call_arguments.delta"]
    [call] = final.output
    assert call.type == "function_call" and "".join(arguments) == call.arguments
    assert orjson.loads(call.arguments) == {"text": QUESTION}


async def test_input_tokens_are_counted(mock_url: str) -> None:
    counted = await client(mock_url).responses.input_tokens.count(
        model="gpt-mock", instructions="Be brief.", input=QUESTION
    )
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == count_tokens(QUESTION) + count_tokens("Be brief.")


async def test_anthropic_messages_are_counted(mock_url: str) -> None:
    anthropic_client = anthropic.AsyncAnthropic(api_key="k", base_url=mock_url, max_retries=0)
    counted = await anthropic_client.messages.count_tokens(
        model="claude-mock", system="Be brief.", messages=[{"role": "user", "content": QUESTION}]
    )
    assert counted.input_tokens == count_tokens(QUESTION) + count_tokens("Be brief.")


async def test_knobs_work_on_the_responses_api(mock_url: str) -> None:
    body = {"model": "m", "input": QUESTION, "stream": True}
    async with ClientSession() as session:
        async with session.post(
            f"{mock_url}/v1/responses", json=body, headers={"x-mock-omit-final": "1"}
        ) as reply:
            names = [name for name, _ in sse_events(await reply.read())]
        assert names[-1] == "response.output_item.done"  # no response.completed
        async with session.post(
            f"{mock_url}/v1/responses", json=body, headers={"x-mock-status": "429"}
        ) as reply:
            assert reply.status == 429
            assert (await reply.json())["error"]["type"] == "invalid_request_error"
        async with session.post(
            f"{mock_url}/v1/messages/count_tokens",
            json={"model": "m", "messages": []},
            headers={"x-mock-status": "529"},
        ) as reply:
            assert (await reply.json())["error"]["type"] == "overloaded_error"
        async with session.post(
            f"{mock_url}/v1/responses",
            json={"model": "m", "input": "hi"},
            headers={"x-mock-tag": "r"},
        ) as reply:
            served = await reply.json()
        async with session.get(f"{mock_url}/mock/stats") as reply:
            stats = await reply.json()
    usage = served["usage"]
    assert stats["r"] == [1, usage["input_tokens"], usage["output_tokens"]]
