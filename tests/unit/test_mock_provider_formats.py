"""The mock provider's structured outputs and `n`, read by the official SDKs pointed
straight at it: an SDK's `parse()` gets a value of its model's schema back."""

from __future__ import annotations

from enum import Enum

import anthropic
import orjson
from pydantic import BaseModel

from extproc.devtools.mock_provider import count_tokens
from extproc.devtools.mock_provider.shapes import MAX_DEPTH, value_for
from tests.unit.test_mock_provider_responses import client

QUESTION = "What is the weather in Paris today?"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": QUESTION}]


class Sky(Enum):
    CLEAR = "clear"
    CLOUDY = "cloudy"


class Reading(BaseModel):
    celsius: float
    hour: int


class Weather(BaseModel):
    city: str
    sky: Sky
    readings: list[Reading]
    note: str | None
    windy: bool


async def test_chat_parse_gets_a_value_of_the_models_schema(mock_url: str) -> None:
    completion = await client(mock_url).chat.completions.parse(
        model="gpt-mock", messages=MESSAGES, response_format=Weather
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Weather)
    assert parsed.city == QUESTION and parsed.sky is Sky.CLEAR and len(parsed.readings) == 1


async def test_json_mode_answers_an_object(mock_url: str) -> None:
    completion = await client(mock_url).chat.completions.create(
        model="gpt-mock", messages=MESSAGES, response_format={"type": "json_object"}
    )
    content = completion.choices[0].message.content
    assert content is not None and orjson.loads(content) == {"text": QUESTION}


async def test_n_choices_json_and_streamed(mock_url: str) -> None:
    completion = await client(mock_url).chat.completions.create(
        model="gpt-mock", messages=MESSAGES, n=3
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {QUESTION}
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 * count_tokens(QUESTION)
    stream = await client(mock_url).chat.completions.create(
        model="gpt-mock", messages=MESSAGES, n=2, stream=True
    )
    texts = ["", ""]
    finished = set()
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add((choice.index, choice.finish_reason))
    assert texts == [QUESTION, QUESTION] and finished == {(0, "stop"), (1, "stop")}


async def test_a_stream_with_usage_reads_as_openais_does(mock_url: str) -> None:
    """The SDK reads the mock's stream with usage as it reads OpenAI's: the last chunk holds
    the counts, no other has any (their null usage, byte for byte, in test_mock_provider)."""
    stream = await client(mock_url).chat.completions.create(
        model="gpt-mock", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None and chunk.choices for chunk in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == count_tokens(QUESTION)
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == QUESTION


async def test_responses_parse_gets_a_value_of_the_models_schema(mock_url: str) -> None:
    response = await client(mock_url).responses.parse(
        model="gpt-mock", input=QUESTION, text_format=Weather
    )
    assert isinstance(response.output_parsed, Weather)
    assert response.output_parsed.readings[0].hour == 1


async def test_anthropic_output_format_is_answered_as_json(mock_url: str) -> None:
    schema = Weather.model_json_schema()
    claude = anthropic.AsyncAnthropic(api_key="k", base_url=mock_url, max_retries=0)
    message = await claude.messages.create(
        model="claude-mock",
        max_tokens=100,
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    block = message.content[0]
    assert block.type == "text"
    assert Weather.model_validate_json(block.text).city == QUESTION


def test_a_recursive_schema_stays_finite() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    value = value_for(schema, "end")
    depth = 0
    while isinstance(value, dict):
        value, depth = value["next"], depth + 1
    assert value == "end" and depth <= MAX_DEPTH
