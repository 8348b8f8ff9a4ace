"""`python bench/codecs.py`: what translating costs through each OpenAI codec, in-process.

The Responses API's codec beside Chat Completions' for the same work, with Anthropic's API
on the other side: a request read and written (a 1 KB chat turn, the tests' full
conversation, 200 turns of 400 KB), an answer, and a streamed text or tool-argument event
(its JSON parsed, then translated the short way the response reader takes). Best of ROUNDS
runs; figures are printed, not asserted.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from extproc.apis import Schema  # noqa: E402
from extproc.translate import hub, openai_chat, openai_responses  # noqa: E402
from extproc.translate.translation import Translation  # noqa: E402

ROUNDS = int(os.environ.get("CODEC_ROUNDS", "7"))
DATA = ROOT / "tests" / "data"
CHAT, RESPONSES, ANTHROPIC = Schema.OPENAI, Schema.OPENAI_RESPONSES, Schema.ANTHROPIC
WORDS = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. "


def best(work: Callable[[], Any], loops: int) -> float:
    """Seconds of CPU per call, best of ROUNDS runs of `loops` calls."""
    fastest = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(loops):
            work()
        fastest = min(fastest, time.process_time() - started)
    return fastest / loops


def requester(client: Schema, backend: Schema, body: dict[str, Any]) -> Callable[[], Any]:
    translation = Translation(client, backend)
    return lambda: translation.request(body, "m", 1024)


def answerer(client: Schema, backend: Schema, body: dict[str, Any]) -> Callable[[], Any]:
    translation = Translation(client, backend)
    return lambda: translation.response(body)


def fixture(name: str) -> Any:
    return orjson.loads((DATA / name).read_bytes())


def _turns(count: int, size: int) -> list[tuple[str, str]]:
    text = (WORDS * (size // len(WORDS) + 1))[:size]
    return [("user" if i % 2 == 0 else "assistant", text) for i in range(count)]


def chat_request(turns: list[tuple[str, str]]) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}]
    messages += [{"role": role, "content": text} for role, text in turns]
    return {"model": "m", "messages": messages, "max_tokens": 256}


def responses_request(turns: list[tuple[str, str]]) -> dict[str, Any]:
    items = [{"role": role, "content": text} for role, text in turns]
    return {"model": "m", "instructions": "Be brief.", "input": items, "max_output_tokens": 256}


def anthropic_request(turns: list[tuple[str, str]]) -> dict[str, Any]:
    messages = [{"role": role, "content": text} for role, text in turns]
    return {"model": "m", "system": "Be brief.", "messages": messages, "max_tokens": 256}


def request_cases() -> list[tuple[str, dict[Schema, Callable[[], Any]], int]]:
    small, large = _turns(1, 1000), _turns(200, 2000)
    full = {CHAT: fixture("translation/openai_request.json")}
    full[CHAT].pop("stop")  # the Responses API has no stop sequences
    full[RESPONSES] = fixture("translation/responses_request.json")
    anthropic_full = fixture("translation/anthropic_request.json")
    anthropic_full.pop("stop_sequences")
    cases: list[tuple[str, dict[Schema, Callable[[], Any]], int]] = []
    for name, bodies, loops in (
        ("1 KB turn", {CHAT: chat_request(small), RESPONSES: responses_request(small)}, 20000),
        ("the tests' full conversation", full, 5000),
        (
            "200 turns, 400 KB",
            {CHAT: chat_request(large), RESPONSES: responses_request(large)},
            100,
        ),
    ):
        works = {api: requester(api, ANTHROPIC, body) for api, body in bodies.items()}
        cases.append((f"request, {name}, client's API -> Anthropic", works, loops))
    for name, body, loops in (
        ("1 KB turn", anthropic_request(small), 20000),
        ("the tests' full conversation", anthropic_full, 5000),
        ("200 turns, 400 KB", anthropic_request(large), 100),
    ):
        works = {api: requester(ANTHROPIC, api, body) for api in (CHAT, RESPONSES)}
        cases.append((f"request, {name}, Anthropic -> backend's API", works, loops))
    return cases


def answer_cases() -> list[tuple[str, dict[Schema, Callable[[], Any]], int]]:
    anthropic = fixture("responses/anthropic_message.json")
    # The same answer (text, usage) in each OpenAI API's words.
    same = hub.Response(
        "abc123", "gpt-x", [hub.Text(WORDS * 4)], hub.Stop.END, hub.Usage(100, 20, 0, 50)
    )
    written = {
        CHAT: openai_chat.write_response(same, created=1),
        RESPONSES: openai_responses.write_response(same, created=1),
    }
    return [
        (
            "answer, Anthropic -> client's API",
            {api: answerer(api, ANTHROPIC, anthropic) for api in written},
            20000,
        ),
        (
            "answer, backend's API -> Anthropic",
            {api: answerer(ANTHROPIC, api, body) for api, body in written.items()},
            20000,
        ),
    ]


def _data(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


ANTHROPIC_TEXT = _data(
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " word"}}
)
ANTHROPIC_ARGUMENTS = _data(
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": "Par'},
    }
)
CHAT_TEXT = _data(
    {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
        "choices": [
            {"index": 0, "delta": {"content": " word"}, "logprobs": None, "finish_reason": None}
        ],
    }
)
RESPONSES_TEXT = _data(
    {
        "type": "response.output_text.delta",
        "sequence_number": 12,
        "item_id": "msg_68af40337e8c8193b1d8f3fa5ff5b4e2",
        "output_index": 0,
        "content_index": 0,
        "delta": " word",
        "logprobs": [],
        "obfuscation": "x7Q",
    }
)


def _stream(client: Schema, backend: Schema, opening: list[bytes]) -> Any:
    """A translated stream past its opening events (the backend's start, a block opened)."""
    made = Translation(client, backend).stream(True)
    for data in opening:
        made.encoded(orjson.loads(data))
    return made


ANTHROPIC_START = _data(
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {}}}
)
CHAT_START = _data(
    {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
)
RESPONSES_START = _data({"type": "response.created", "response": {"id": "resp_1", "model": "m"}})
TOOL_START = _data(
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather"},
    }
)


def event_cases() -> list[tuple[str, dict[Schema, Callable[[], Any]], int]]:
    def per_event(made: Any, data: bytes) -> Callable[[], Any]:
        return lambda: made.encoded(orjson.loads(data))

    opened = [ANTHROPIC_START, ANTHROPIC_TEXT]
    return [
        (
            "streamed text event, Anthropic -> client's API",
            {
                api: per_event(_stream(api, ANTHROPIC, opened), ANTHROPIC_TEXT)
                for api in (CHAT, RESPONSES)
            },
            50000,
        ),
        (
            "streamed tool-argument event, Anthropic -> client's API",
            {
                api: per_event(_stream(api, ANTHROPIC, [*opened, TOOL_START]), ANTHROPIC_ARGUMENTS)
                for api in (CHAT, RESPONSES)
            },
            50000,
        ),
        (
            "streamed text event, backend's API -> Anthropic",
            {
                CHAT: per_event(_stream(ANTHROPIC, CHAT, [CHAT_START, CHAT_TEXT]), CHAT_TEXT),
                RESPONSES: per_event(
                    _stream(ANTHROPIC, RESPONSES, [RESPONSES_START, RESPONSES_TEXT]),
                    RESPONSES_TEXT,
                ),
            },
            50000,
        ),
    ]


def main() -> None:
    print(machine())
    print(f"best of {ROUNDS}; µs of CPU per call; Chat Completions | Responses API | ratio")
    for name, works, loops in request_cases() + answer_cases() + event_cases():
        chat, responses = best(works[CHAT], loops), best(works[RESPONSES], loops)
        print(f"  {name:<58} {chat * 1e6:8.2f} {responses * 1e6:8.2f}  {responses / chat:5.2f}")


if __name__ == "__main__":
    main()
