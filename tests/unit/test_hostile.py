"""Hostile input, property-based: whatever bytes, JSON or text arrive, the SSE parser, the
request handling, the redaction and the stream filters raise nothing and keep their
output well-formed; patterns stay linear on prompts built to make them backtrack."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extproc.apis import ENDPOINTS, Kind
from extproc.dataplane.decisions import Continue, Lookup, Reply, Reserve
from extproc.dataplane.exchange import Exchange
from extproc.policy.engine import Decisions, Redactions, evaluate_request
from extproc.policy.filters import OpenAIStreamFilter
from extproc.sse import Event, Parser
from tests.helpers import runtime
from tests.unit.test_policy import POLICIES, POLICY_SET
from tests.unit.test_streams import openai_stream, openai_text, run_filter

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)], strict=True)]


# -- SSE --------------------------------------------------------------------------------

_names = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), min_size=1
)
_data = st.text(st.characters(blacklist_characters="\r", blacklist_categories=["Cs"]))
_events = st.builds(Event, st.one_of(st.none(), _names), _data)


@FAST
@given(st.lists(_events, max_size=10), st.lists(st.integers(0, 10**6), max_size=12))
def test_sse_events_survive_any_split(events: list[Event], points: list[int]) -> None:
    data = b"".join(e.encode() for e in events)
    parser = Parser()
    parsed = [event for chunk in cut(data, points) for event in parser.feed(chunk)]
    parsed += parser.close()
    assert [(e.name, e.data) for e in parsed] == [(e.name, e.data) for e in events]


@FAST
@given(st.binary(max_size=3000), st.lists(st.integers(0, 10**6), max_size=12))
def test_sse_parser_takes_any_bytes_the_same_however_split(data: bytes, points: list[int]) -> None:
    whole = Parser()
    expected = whole.feed(data) + whole.close()
    split = Parser()
    got = [event for chunk in cut(data, points) for event in split.feed(chunk)] + split.close()
    assert got == expected
    assert all(isinstance(e.data, str) for e in got)


def test_a_huge_event_in_small_chunks_is_parsed_in_linear_time() -> None:
    """A 4 MB event in 4 KB chunks once took 17 s of rescanning; now one pass."""
    data = b"data: " + b"x" * (4 * 1024 * 1024) + b"\n\n"
    parser = Parser()
    started = time.perf_counter()
    events = [e for i in range(0, len(data), 4096) for e in parser.feed(data[i : i + 4096])]
    assert len(events) == 1 and len(events[0].data) == 4 * 1024 * 1024
    assert time.perf_counter() - started < 2


# -- request bodies ---------------------------------------------------------------------

RT = runtime(
    POLICIES.replace(
        'backends: [{name: b, url: "http://127.0.0.1:9/v1"}]',
        "backends:\n"
        '  - {name: b, url: "http://127.0.0.1:9/v1"}\n'
        '  - {name: a, schema: anthropic, url: "http://127.0.0.1:9/v1"}',
    )
    .replace(
        "models: [{name: m, routes: [{backend: b}]}]",
        "models:\n  - {name: m, routes: [{backend: b}]}\n  - {name: c, routes: [{backend: a}]}",
    )
    .replace(
        "tenants: [{name: t, policies: [guard, watch]}]",
        "tenants: [{name: t, policies: [guard, watch]}]\nauth: {anonymous_tenant: t}",
    )
)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]), "content": _json}
)
_body = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "c", "nope", 3])},
    optional={
        "messages": st.one_of(st.lists(_message, max_size=4), _json),
        "stream": _json,
        "max_tokens": _json,
        "tools": _json,
        "tool_choice": _json,
        "system": _json,
        "input": _json,
        "temperature": _json,
        "stream_options": _json,
        "n": _json,
    },
)


def check(decision: object, path: str) -> None:
    assert isinstance(decision, Continue | Reply | Reserve | Lookup), decision
    if isinstance(decision, Reply):
        assert 400 <= decision.status < 600
        body = orjson.loads(decision.body)
        if path == "/v1/messages":
            assert body["type"] == "error" and isinstance(body["error"]["message"], str)
        else:
            assert isinstance(body["error"]["message"], str)
    if isinstance(decision, Continue) and decision.body is not None:
        sent = orjson.loads(decision.body)  # whatever is sent on is a request, in JSON
        assert isinstance(sent, dict) and isinstance(sent.get("model"), str), sent


@FAST
@given(st.sampled_from(["/v1/chat/completions", "/v1/messages", "/v1/embeddings"]), _body)
def test_any_json_body_gets_a_decision_never_an_exception(path: str, body: dict[str, Any]) -> None:
    exchange = Exchange(RT)
    exchange.request_headers({":path": path, ":method": "POST", "x-request-id": "r"}, False)
    # The standard encoder: integers beyond 64 bits too (orjson refuses to write them).
    check(exchange.request_body(json.dumps(body).encode()), path)


@FAST
@given(st.sampled_from(["/v1/chat/completions", "/v1/messages"]), st.binary(max_size=500))
@example("/v1/chat/completions", b"")
@example("/v1/messages", b"\xff\xfe{")
@example("/v1/chat/completions", b"[]")
@example("/v1/messages", b"{}")
def test_any_bytes_as_a_body_get_a_clear_error(path: str, raw: bytes) -> None:
    exchange = Exchange(RT)
    exchange.request_headers({":path": path, ":method": "POST", "x-request-id": "r"}, False)
    decision = exchange.request_body(raw)
    # Random bytes are never a request: a 400 in the client's schema, saying why.
    assert isinstance(decision, Reply) and decision.status == 400, decision
    check(decision, path)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        assert exchange.error_code in ("missing_required_parameter", "invalid_type")
    else:
        assert exchange.error_code == "invalid_json"


# -- redaction --------------------------------------------------------------------------

_pii = st.sampled_from(
    [
        "a@x.io",
        "bob.smith+tag@corp.example",
        "+1 415 555 0100",
        "4111 1111 1111 1111",
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "EMP-123456",
        "10.1.2.3",
        "[EMAIL_1]",
    ]
)
# Words apart: a detector cannot tell "a@x.io" inside "a@x.io0" from another address.
_prompt = st.lists(st.one_of(st.text(max_size=25), _pii), max_size=8).map(" ".join)


@FAST
@given(st.lists(_prompt, min_size=1, max_size=4))
def test_redaction_of_any_prompt_is_well_formed(prompts: list[str]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": p} for p in prompts]}
    sent = copy.deepcopy(body)
    redactions = Redactions()
    error, _ = evaluate_request(POLICY_SET, Kind.CHAT, sent, redactions, Decisions())
    if error is not None:
        assert 400 <= error.status < 500
        return
    orjson.dumps(sent)
    for message in sent["messages"][1:-1] if len(sent["messages"]) > 2 else sent["messages"]:
        content = message["content"]
        assert "a@x.io" not in content and "bob.smith+tag@corp.example" not in content
    # What the provider saw, restored, is what the client wrote (emails are restorable).
    for original, message in zip(
        prompts, [m for m in sent["messages"] if m["role"] == "user"], strict=True
    ):
        restored = redactions.restore(message["content"])
        if "+1 415" not in original and "EMP-" not in original and "sk-proj" not in original:
            assert restored == original


@FAST
@given(st.lists(_prompt, min_size=1, max_size=6), st.lists(st.integers(0, 10**6), max_size=6))
def test_stream_redaction_is_the_same_however_the_stream_is_split(
    pieces: list[str], points: list[int]
) -> None:
    data = openai_stream(pieces)

    def make() -> OpenAIStreamFilter:
        table = Redactions()
        table.placeholder("EMAIL", "a@x.io", restore=True)
        return OpenAIStreamFilter(
            POLICY_SET, table, Decisions(), ENDPOINTS["/v1/chat/completions"].kind
        )

    whole = openai_text(run_filter(make, [data]))
    split = openai_text(run_filter(make, cut(data, points)))
    assert split == whole


# -- patterns made to backtrack ----------------------------------------------------------

BACKTRACKING = """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
policies:
  - name: evil
    deny:
      - {name: nested, patterns: ["(a+)+$", "(x+x+)+y", "^(([a-z])+.)+[A-Z]([a-z])+$", "(.*a){12}"]}
    pii:
      - {detector: email, action: redact}
      - {detector: phone, action: redact}
      - {detector: payment_card, action: redact}
      - {detector: secret, action: redact}
      - {detector: ip_address, action: redact}
      - {name: custom, pattern: "(\\\\w+\\\\s?)+:", action: redact}
tenants: [{name: t, policies: [evil]}]
"""


@pytest.mark.parametrize(
    "prompt",
    [
        "a" * 65536 + "!",
        "x" * 65536,
        "ab" * 32768,
        "@" * 65536,
        "a@" * 32768,
        "1 " * 32768,
        "4111" * 16384,
        "1." * 32768,
        "word " * 13107,
        "sk-" * 21845,
    ],
    ids=lambda p: f"{p[:6]!r}x{len(p)}",
)
def test_prompts_built_to_backtrack_take_linear_time(prompt: str) -> None:
    """RE2 and windowed detectors: 64 KB of the worst input for a backtracking engine
    takes milliseconds (a backtracking engine would take hours on some of these)."""
    loaded = runtime(BACKTRACKING)
    policies = loaded.policy_set(loaded.tenants["t"], loaded.models[0])
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    started = time.perf_counter()
    evaluate_request(policies, Kind.CHAT, body, Redactions(), Decisions())
    assert time.perf_counter() - started < 1.0
