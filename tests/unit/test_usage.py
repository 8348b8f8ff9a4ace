"""Usage from every response shape (documented provider formats), streams split anywhere."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
from pathlib import Path

import orjson
import pytest

from extproc import tokens
from extproc.accounting.prices import Price
from extproc.accounting.usage import FIELDS, Meter, Usage, prompt_bound, prompt_estimate
from extproc.apis import Kind, Schema
from extproc.dataplane.reader import JsonReader, StreamReader
from extproc.telemetry.metrics import Level, Metrics, Tally
from extproc.translate.translation import Translation

DATA = Path(__file__).parent.parent / "data" / "responses"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def read_json(api: Schema, kind: Kind, name: str) -> Usage:
    meter = Meter(api, kind)
    assert JsonReader(meter, None).feed(fixture(name), True) is None  # untouched
    return meter.usage(prompt=11)


def test_openai_chat_with_cached_input() -> None:
    usage = read_json(Schema.OPENAI, Kind.CHAT, "openai_chat.json")
    assert usage.fields() == {
        "input_tokens": 1117,
        "output_tokens": 46,
        "total_tokens": 1163,
        "cached_input_tokens": 1024,
        "cache_creation_input_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert not usage.estimated
    assert {"input_tokens", "output_tokens", "cached_input_tokens"} <= usage.reported


def test_fields_name_every_count_in_order() -> None:
    usage = Usage(10, 4, cached_input_tokens=3, cache_creation_input_tokens=2, reasoning_tokens=1)
    assert usage.fields() == {name: getattr(usage, name) for name in FIELDS}
    assert tuple(usage.fields()) == FIELDS
    assert usage.fields()["total_tokens"] == 14


def test_openai_reasoning_tokens() -> None:
    usage = read_json(Schema.OPENAI, Kind.CHAT, "openai_reasoning.json")
    assert (usage.output_tokens, usage.reasoning_tokens, usage.total_tokens) == (145, 128, 158)


def test_openai_embeddings_have_no_output() -> None:
    usage = read_json(Schema.OPENAI, Kind.EMBEDDINGS, "openai_embeddings.json")
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (5, 0, 5)
    assert not usage.estimated


def test_openai_completions() -> None:
    usage = read_json(Schema.OPENAI, Kind.COMPLETIONS, "openai_completions.json")
    assert (usage.input_tokens, usage.output_tokens) == (5, 7)


def test_anthropic_input_includes_the_prompt_cache() -> None:
    usage = read_json(Schema.ANTHROPIC, Kind.MESSAGES, "anthropic_message.json")
    # Anthropic's input_tokens excludes cache reads and writes; the record's includes them.
    assert usage.input_tokens == 2095 + 2048 + 4096
    assert usage.cached_input_tokens == 4096
    assert usage.cache_creation_input_tokens == 2048
    assert usage.uncached_input_tokens == 2095
    assert usage.output_tokens == 503
    assert not usage.estimated


def test_missing_usage_is_estimated_from_the_text() -> None:
    usage = read_json(Schema.OPENAI, Kind.CHAT, "openai_no_usage.json")
    assert usage.input_tokens == 11  # the prompt estimate handed in
    assert usage.output_tokens == tokens.count(["Hello there, how can I help you today?"])
    assert usage.estimated == {"input_tokens", "output_tokens", "total_tokens"}
    assert not usage.reported


def feed_split(reader: StreamReader, stream: bytes, cuts: list[int]) -> bytes:
    out = b""
    points = [0, *cuts, len(stream)]
    for number, (start, end) in enumerate(itertools.pairwise(points)):
        result = reader.feed(stream[start:end], number == len(points) - 2)
        out += stream[start:end] if result is None else result
    return out


def every_split(stream: bytes, step: int = 1) -> list[list[int]]:
    return [[cut] for cut in range(1, len(stream), step)]


@pytest.mark.parametrize("cuts", every_split(fixture("openai_stream_usage.sse"), 7))
def test_requested_stream_usage_is_read_and_removed(cuts: list[int]) -> None:
    """The gateway asked for usage the client did not: the client gets the stream it
    would have got without the gateway, byte for byte, whatever the chunking."""
    meter = Meter(Schema.OPENAI, Kind.CHAT)
    reader = StreamReader(meter, None, strip_usage=True)
    out = feed_split(reader, fixture("openai_stream_usage.sse"), cuts)
    assert out == fixture("openai_stream.sse")
    usage = meter.usage(prompt=None)
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (82, 17, 64)
    assert not usage.estimated and meter.complete and meter.saw_usage_chunk


def test_stream_usage_the_client_asked_for_is_untouched() -> None:
    meter = Meter(Schema.OPENAI, Kind.CHAT)
    reader = StreamReader(meter, None, strip_usage=False)
    stream = fixture("openai_stream_usage.sse")
    assert feed_split(reader, stream, [100, 101, 900]) == stream
    assert meter.usage(None).total_tokens == 99


def test_null_usage_is_removed_wherever_it_sits() -> None:
    meter = Meter(Schema.OPENAI, Kind.CHAT)
    reader = StreamReader(meter, None, strip_usage=True)
    stream = (
        b'data: {"usage": null, "id":"a","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        b'data: {"id":"a","usage" :null,"choices":[{"index":0,"delta":{"content":"y"}}]}\n\n'
    )
    out = reader.feed(stream, False)
    assert out == (
        b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"y"}}]}\n\n'
    )


@pytest.mark.parametrize(
    ("data", "sent"),
    [
        # How OpenAI writes it: the last member, cut without the expression.
        (
            b'{"id":"a","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}',
            b'{"id":"a","choices":[{"index":0,"delta":{"content":"x"}}]}',
        ),
        # Last, with a nested member named usage before it: the object's own goes.
        (
            b'{"id":"a","x":{"usage":null,"b":1},"choices":[],"usage":null}',
            b'{"id":"a","x":{"usage":null,"b":1},"choices":[]}',
        ),
        # As Python's json writes it, last.
        (
            b'{"id": "a", "x": {"usage": null}, "usage": null}',
            b'{"id": "a", "x": {"usage": null}}',
        ),
        # Not last: the expression finds it.
        (
            b'{"id":"a","usage": null,"choices":[]}',
            b'{"id":"a","choices":[]}',
        ),
        # Not last, a nested member named usage before it: the object's own goes.
        (
            b'{"a":{"usage":null},"usage": null}',
            b'{"a":{"usage":null}}',
        ),
        # A key ending in an escaped quote and "usage" is no member of that name.
        (
            b'{"x\\"usage":null, "y":1,"usage":null }',
            b'{"x\\"usage":null, "y":1 }',
        ),
        # The words inside a text are not a member.
        (
            b'{"choices":[{"index":0,"delta":{"content":"\\"usage\\":null}"}}],"usage":null}',
            b'{"choices":[{"index":0,"delta":{"content":"\\"usage\\":null}"}}]}',
        ),
    ],
)
@pytest.mark.parametrize("split", [False, True], ids=["one chunk", "split"])
def test_null_usage_is_cut_from_the_text_as_written(data: bytes, sent: bytes, split: bool) -> None:
    """The same cut whether the event comes whole (read as bytes) or split (as text)."""
    reader = StreamReader(Meter(Schema.OPENAI, Kind.CHAT), None, strip_usage=True)
    event = b"data: " + data + b"\n\n"
    cuts = [10, len(event)] if split else [len(event)]  # [DONE] last, on its own
    assert feed_split(reader, event + b"data: [DONE]\n\n", cuts) == (
        b"data: " + sent + b"\n\ndata: [DONE]\n\n"
    )


def test_an_event_cut_of_its_null_usage_keeps_its_id_and_retry() -> None:
    reader = StreamReader(Meter(Schema.OPENAI, Kind.CHAT), None, strip_usage=True)
    event = b'id: 5\nretry: 300\ndata: {"choices":[{"index":0,"delta":{}}],"usage":null}\n\n'
    assert reader.feed(event, False) == (
        b'id: 5\nretry: 300\ndata: {"choices":[{"index":0,"delta":{}}]}\n\n'
    )


@pytest.mark.parametrize("cuts", every_split(fixture("anthropic_stream.sse"), 5))
def test_anthropic_stream_usage_merges_field_by_field(cuts: list[int]) -> None:
    meter = Meter(Schema.ANTHROPIC, Kind.MESSAGES)
    reader = StreamReader(meter, None, strip_usage=False)
    stream = fixture("anthropic_stream.sse")
    assert feed_split(reader, stream, cuts) == stream
    usage = meter.usage(prompt=None)
    # message_start: 472 input, 100 cache write, 2000 cache read; the last message_delta
    # updates input (480) and output (89); the cache write count stays from the start.
    assert usage.input_tokens == 480 + 100 + 2000
    assert usage.cache_creation_input_tokens == 100
    assert usage.cached_input_tokens == 2000
    assert usage.output_tokens == 89
    assert not usage.estimated and meter.complete


def test_cut_anthropic_stream_estimates_only_the_output() -> None:
    stream = fixture("anthropic_stream.sse")
    cut = stream.index(b"event: content_block_stop")
    meter = Meter(Schema.ANTHROPIC, Kind.MESSAGES)
    StreamReader(meter, None, strip_usage=False).feed(stream[:cut], False)
    usage = meter.usage(prompt=None)
    assert usage.input_tokens == 2572 and "input_tokens" in usage.reported
    assert usage.output_tokens == tokens.count(
        ["Okay, let's check", " the weather for San Francisco, CA:"]
    )
    assert usage.estimated == {"output_tokens", "total_tokens"}
    assert not meter.complete


def test_cut_openai_stream_estimates_from_text_and_prompt() -> None:
    stream = fixture("openai_stream_usage.sse")
    cut = stream.index(b"data:", stream.index(b"get_weather"))
    meter = Meter(Schema.OPENAI, Kind.CHAT)
    StreamReader(meter, None, strip_usage=True).feed(stream[:cut], False)
    usage = meter.usage(prompt=40)
    assert usage.input_tokens == 40
    assert usage.output_tokens == tokens.count(["Héllo", " wörld ☕", "get_weather"])
    assert usage.estimated == {"input_tokens", "output_tokens", "total_tokens"}


def test_prompt_estimates() -> None:
    chat = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello there"}]},
        ],
    }
    text = tokens.count(["Be brief.", "Hello there"])
    assert prompt_estimate(Kind.CHAT, chat) == text + 3 + 3 * 2
    assert prompt_estimate(Kind.EMBEDDINGS, {"input": [1, 2, 3]}) == 3
    assert prompt_estimate(Kind.EMBEDDINGS, {"input": [[1, 2], [3]]}) == 3
    assert prompt_estimate(Kind.EMBEDDINGS, {"input": "Hello there"}) == tokens.count(
        ["Hello there"]
    )
    messages = {"model": "m", "system": "Be brief.", "messages": [{"role": "user", "content": "x"}]}
    assert prompt_estimate(Kind.MESSAGES, messages) == tokens.count(["Be brief.", "x"]) + 3 + 3


def test_cost_prices_cached_and_cache_writes_separately() -> None:
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_creation_input=3.75)
    usage = read_json(Schema.ANTHROPIC, Kind.MESSAGES, "anthropic_message.json")
    expected = (2095 * 3.0 + 4096 * 0.3 + 2048 * 3.75 + 503 * 15.0) / 1e6
    assert price.cost(usage) == pytest.approx(expected)
    assert price.estimate(1000, 100) == pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6)


def test_usage_with_policy_filter_parses_each_event_once() -> None:
    """The meter and a policy filter share one parse; the meter sees the provider's text."""
    from extproc.policy.engine import Decisions, Redactions
    from extproc.policy.filters import OpenAIStreamFilter
    from tests.unit.test_policy import POLICY_SET

    meter = Meter(Schema.OPENAI, Kind.CHAT)
    policy = OpenAIStreamFilter(POLICY_SET, Redactions(), Decisions(), Kind.CHAT)
    reader = StreamReader(meter, policy, strip_usage=True)
    out = reader.feed(fixture("openai_stream_usage.sse"), True)
    assert out is not None
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    chunks = [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Héllo wörld ☕"
    assert meter.usage(None).total_tokens == 99


def test_completions_stream_counts_text_and_reads_usage() -> None:
    base = '{"id":"cmpl-1","object":"text_completion","created":1,"model":"gpt-3.5-turbo-instruct"'
    stream = (
        f'data: {base},"choices":[{{"text":"Hello","index":0,"logprobs":null,"finish_reason":null}}],"usage":null}}\n\n'
        f'data: {base},"choices":[{{"text":" world","index":0,"logprobs":null,"finish_reason":"stop"}}],"usage":null}}\n\n'
        f'data: {base},"choices":[],"usage":{{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}}}\n\n'
        "data: [DONE]\n\n"
    ).encode()
    meter = Meter(Schema.OPENAI, Kind.COMPLETIONS)
    out = StreamReader(meter, None, strip_usage=True).feed(stream, True)
    assert out is not None and b"usage" not in out and out.count(b"data: ") == 3
    assert meter.texts == ["Hello", " world"]
    assert (meter.usage(None).input_tokens, meter.usage(None).output_tokens) == (4, 2)


def test_tenant_labels_are_opt_in() -> None:
    from extproc.telemetry.metrics import Metrics
    from extproc.telemetry.observation import Observation

    observation = Observation(
        labels=("chat", "openai", "m", "b", "team-a"),
        usage=Usage(input_tokens=3, output_tokens=4, reported=frozenset({"input_tokens"})),
        cost=0.5,
        duration=0.2,
        error_type="",
        time_to_first_token=0.01,
        time_per_output_token=0.02,
    )
    with_tenants = Metrics(tenant_labels=True)
    with_tenants.observe(observation, "USD")
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "m",
        "backend": "b",
        "tenant": "team-a",
    }
    registry = with_tenants.registry
    assert (
        registry.get_sample_value(
            "gen_ai_client_token_usage_sum", {**labels, "gen_ai_token_type": "output"}
        )
        == 4
    )
    assert registry.get_sample_value("extproc_cost_total", {**labels, "currency": "USD"}) == 0.5
    without = Metrics()
    without.observe(dataclasses.replace(observation, labels=observation.labels[:4]), "USD")
    del labels["tenant"]
    assert (
        without.registry.get_sample_value("gen_ai_server_time_to_first_token_seconds_count", labels)
        == 1
    )


HAND_MADE = (
    b'event: chunk\ndata: {"id":"a","usage":null,"choices":[{"index":0,"delta":{"content":"x"}}]}'
    b"\n\n"
    b"data: not json\n\n"
    b"data: [1, 2]\n\n"
    b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"\xff y"}}],"usage":null}\n\n'
    b'data: {"id":"a","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,'
    b'"total_tokens":5}}\n\n'
    b"data: [DONE]\n\n"
)


ANTHROPIC_HAND_MADE = b"".join(
    b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
    for name, payload in [
        (
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "delta": {"type": "text_delta", "text": "before the start"},
            },
        ),
        (
            b"message_start",
            {
                "type": "message_start",
                "message": {"id": 'm\u0001"1', "model": "\u0001", "usage": {"input_tokens": 3}},
            },
        ),
        (
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "delta": {"type": "text_delta", "text": 'quotes " and \n é \u2028'},
            },
        ),
        (
            b"content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": None}},
        ),
        (b"content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta"}}),
        (
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            },
        ),
        (b"content_block_delta", {"type": "content_block_delta", "delta": "not a dict"}),
        (b"message_start", {"type": "message_start", "message": {"id": "m2", "model": "other"}}),
        (
            b"content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "after"}},
        ),
        (
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 4},
            },
        ),
        (b"message_stop", {"type": "message_stop"}),
    ]
)


def _reader(case: str) -> StreamReader:
    openai, anthropic = Schema.OPENAI, Schema.ANTHROPIC
    if case == "strip":
        return StreamReader(Meter(openai, Kind.CHAT), None, strip_usage=True)
    if case == "keep":
        return StreamReader(Meter(openai, Kind.CHAT), None, strip_usage=False)
    if case.startswith("to openai"):
        stream = Translation(openai, anthropic).stream(True)
        reader = StreamReader(Meter(anthropic, Kind.MESSAGES), None, False, stream)
        reader.emit_usage = case.endswith("usage")
        return reader
    stream = Translation(anthropic, openai).stream(True)
    return StreamReader(Meter(openai, Kind.CHAT), None, False, stream)


@pytest.mark.sources
@pytest.mark.parametrize(
    ("case", "stream"),
    [
        ("strip", "openai_stream_usage.sse"),
        ("strip", HAND_MADE),
        ("keep", "openai_stream_usage.sse"),
        ("keep", HAND_MADE),
        ("to openai, with usage", "anthropic_stream.sse"),
        ("to openai", "anthropic_stream.sse"),
        ("to openai, with usage", ANTHROPIC_HAND_MADE),
        ("to anthropic", "openai_stream_usage.sse"),
        ("to anthropic", HAND_MADE),
    ],
)
@pytest.mark.parametrize("per_chunk", [1, 3])
def test_whole_event_chunks_read_as_the_parser_reads_them(
    case: str, stream: str | bytes, per_chunk: int
) -> None:
    """Chunks of whole events take a shorter path (no Event objects) than other chunks;
    both give the client the same bytes, the meter the same counts and a schema-drift
    watch the same field paths."""
    data = fixture(stream) if isinstance(stream, str) else stream
    events = [block + b"\n\n" for block in data.split(b"\n\n") if block]
    chunks = [b"".join(events[i : i + per_chunk]) for i in range(0, len(events), per_chunk)]
    short, long = _reader(case), _reader(case)
    long.collected = []  # kept for the cache: every chunk takes the parser's path
    short.paths, long.paths = set(), set()
    shortened = []  # the chunks the short reader read on bytes
    on_bytes = short._feed_blocks
    short._feed_blocks = lambda blocks: shortened.append(blocks) or on_bytes(blocks)
    outputs = []
    for reader in (short, long):
        out = []
        for number, chunk in enumerate(chunks):
            result = reader.feed(chunk, number == len(chunks) - 1)
            out.append(chunk if result is None else result)
        outputs.append(b"".join(out))
    assert outputs[0] == outputs[1]
    assert dataclasses.asdict(short.meter) == dataclasses.asdict(long.meter)
    assert short.meter.texts  # the meter did read the stream
    assert short.paths and short.paths == long.paths
    assert shortened  # the short way was taken


def test_a_tally_adds_what_observe_would_have() -> None:
    """Observations counted in a Tally and added in one step leave the histogram as
    observing each would: same buckets (bounds included), same sum."""
    values = [0.0, 0.00001, 0.00005, 0.00005001, 0.0003, 0.001, 0.1, 0.5, 2.0]
    one_by_one, tallied = Metrics(), Metrics()
    for value in values:
        one_by_one.phase["response_body"].observe(value)
    tally = Tally(tallied.phase["response_body"])
    for value in values:
        tally.observe(value)
    assert tallied.registry.get_sample_value(
        "extproc_phase_duration_seconds_count", {"phase": "response_body"}
    ) in (None, 0.0)
    tally.add_to(tallied.phase["response_body"])

    def samples(metrics: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, round(s.value, 12))
            for family in metrics.registry.collect()
            if family.name == "extproc_phase_duration_seconds"
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples(tallied) == samples(one_by_one)
    assert any(s[0].endswith("_count") and s[2] == len(values) for s in samples(tallied))


def test_deferred_metrics_reach_a_scrape_as_observed() -> None:
    """In the serving process the loop's thread counts observations in tallies; a scrape
    from another thread (prometheus_client's) has the loop add them first, and reads what
    observing each at once would have left."""
    from extproc.telemetry.observation import Observation

    observation = Observation(
        labels=("chat", "openai", "gpt-4o-mini", "mock"),
        usage=Usage(input_tokens=12, output_tokens=30, estimated=frozenset({"output_tokens"})),
        cost=0.0002,
        duration=0.42,
        error_type="",
        time_to_first_token=0.05,
        time_per_output_token=0.01,
    )
    deferred, direct = Metrics(), Metrics()

    def observe(metrics: Metrics, times: int) -> None:
        for _ in range(times):
            metrics.phase["request_body"].observe(0.00004)
            metrics.phase["request_body"].observe(0.3)
            metrics.request("gpt-4o-mini", "mock", "200")
            metrics.observe(observation, "USD")
            metrics.streams.inc()  # two streams open, one ends
            metrics.streams.inc()
            metrics.streams.dec()
        chunks = Tally(metrics.phase["response_body"])
        chunks.observe(0.00002)
        chunks.add_to(metrics.phase["response_body"])

    def samples(metrics: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, round(s.value, 12))
            for family in metrics.registry.collect()
            if not family.name.startswith("process_")
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def on_the_loop(times: int) -> None:
            if deferred.loop is None:
                deferred.defer()
            observe(deferred, times)

        asyncio.run_coroutine_threadsafe(on_the_loop(3), loop).result(timeout=5)
        observe(direct, 3)
        assert isinstance(deferred.phase["request_body"], Tally)
        assert isinstance(deferred.streams, Level)
        assert samples(deferred) == samples(direct)  # the scrape had the loop add them
        asyncio.run_coroutine_threadsafe(on_the_loop(2), loop).result(timeout=5)
        observe(direct, 2)
        assert samples(deferred) == samples(direct)  # added once each, not again
        assert (
            deferred.registry.get_sample_value(
                "extproc_requests_total",
                {"model": "gpt-4o-mini", "backend": "mock", "status": "200"},
            )
            == 5
        )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
    # The loop is gone: a scrape reads what was added and does not wait.
    assert samples(deferred) == samples(direct)


def test_responses_usage_counts_the_cache_and_reasoning() -> None:
    usage = read_json(Schema.OPENAI_RESPONSES, Kind.RESPONSES, "openai_responses.json")
    assert (usage.input_tokens, usage.cached_input_tokens, usage.uncached_input_tokens) == (
        1117,
        1024,
        93,
    )
    assert (usage.output_tokens, usage.reasoning_tokens, usage.total_tokens) == (78, 32, 1195)
    assert not usage.estimated


def test_a_responses_answer_without_usage_is_estimated_from_its_output() -> None:
    answer = orjson.loads(fixture("openai_responses.json"))
    answer["usage"] = None
    meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
    meter.json(answer)
    usage = meter.usage(prompt=11)
    assert usage.output_tokens == tokens.count([answer["output"][1]["content"][0]["text"]])
    assert usage.estimated == {"input_tokens", "output_tokens", "total_tokens"}
    assert meter.complete
    # A background response, queued: no answer yet.
    meter.json({**answer, "status": "queued", "output": []})
    assert not meter.complete


def test_responses_stream_usage_arrives_with_its_last_event() -> None:
    stream = fixture("openai_responses_stream.sse")
    last = orjson.loads(stream.rsplit(b"data: ", 1)[1])["response"]["usage"]
    for cuts in every_split(stream):
        meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
        assert feed_split(StreamReader(meter, None, strip_usage=False), stream, cuts) == stream
        usage = meter.usage(prompt=None)
        assert (usage.input_tokens, usage.output_tokens) == (
            last["input_tokens"],
            last["output_tokens"],
        )
        assert not usage.estimated and meter.complete


def test_a_cut_responses_stream_counts_its_text_and_arguments() -> None:
    stream = fixture("openai_responses_stream.sse")
    cut = stream.index(b"event: response.function_call_arguments.done")
    meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
    StreamReader(meter, None, strip_usage=False).feed(stream[:cut], False)
    deltas = [
        event["delta"]
        for event in (
            orjson.loads(line[6:]) for line in stream[:cut].split(b"\n") if line[:6] == b"data: "
        )
        if event["type"].endswith(".delta")
    ]
    usage = meter.usage(prompt=40)
    assert deltas and usage.output_tokens == tokens.count(deltas)
    assert usage.estimated == {"input_tokens", "output_tokens", "total_tokens"}
    assert not meter.complete and not meter.answered()


def test_responses_prompt_estimates() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ],
        "tools": [tool],
    }
    text = tokens.count(["Be brief.", "Hello there", "{}", orjson.dumps(tool).decode()])
    # The instructions and each item are a message each.
    assert prompt_estimate(Kind.RESPONSES, body) == text + 3 + 3 * 3
    plain = {"model": "m", "input": "Hello there"}
    assert prompt_estimate(Kind.RESPONSES, plain) == tokens.count(["Hello there"]) + 3 + 3
    assert prompt_bound(Kind.RESPONSES, plain) >= prompt_estimate(Kind.RESPONSES, plain)
