"""POST /v1/messages/count_tokens: sent to a backend of Anthropic's API, counted offline
for any other; tenants, allow-lists and policies apply; never charged to a budget."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.accounting.usage import prompt_estimate
from extproc.apis import Kind
from extproc.dataplane import report
from extproc.dataplane.decisions import Continue, Reply
from extproc.dataplane.exchange import Exchange
from tests.helpers import runtime, sha256

CONFIG = f"""
backends:
  - {{name: openai, url: "http://127.0.0.1:9/v1", credential: {{env: TEST_OPENAI_KEY}}}}
  - name: anthropic
    schema: anthropic
    url: "http://127.0.0.1:9/v1"
    credential: {{env: TEST_ANTHROPIC_KEY}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}]}}
  - {{name: "claude-*", routes: [{{backend: anthropic}}]}}
  - name: claude-resilient
    routes: [{{backend: anthropic}}]
    fallbacks: [{{backend: anthropic, upstream_model: claude-backup}}]
policies:
  - name: guard
    deny: [{{name: weapons, keywords: ["build a bomb"]}}]
tenants:
  - name: team
    api_key_sha256: ["{sha256("key-t")}"]
    models: ["claude-*", "gpt-4o-mini"]
    policies: [guard]
    budgets: [{{name: minute, window: minute, max_tokens: 1000}}]
  - name: narrow
    api_key_sha256: ["{sha256("key-n")}"]
    models: ["claude-*"]
"""
RT = runtime(CONFIG)
PATH = "/v1/messages/count_tokens"
MESSAGES = [{"role": "user", "content": "How many tokens is this?"}]


def counting(key: str = "key-t") -> Exchange:
    exchange = Exchange(RT)
    headers = {
        ":path": PATH,
        ":method": "POST",
        "x-api-key": key,
        "anthropic-version": "2023-06-01",
    }
    assert isinstance(exchange.request_headers(headers, end_of_stream=False), Continue)
    return exchange


def body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "claude-3-5-haiku", "messages": MESSAGES, **fields})


def test_a_count_for_an_anthropic_model_goes_to_its_endpoint_uncharged() -> None:
    exchange = counting()
    decision = exchange.request_body(body(system="Be brief."))
    # No reservation asked although the tenant has a budget: a count generates nothing.
    assert isinstance(decision, Continue), decision
    headers = dict(decision.set_headers)
    assert headers[":path"] == "/v1/messages/count_tokens"
    assert headers["x-api-key"] == "sk-ant-test"
    assert exchange.reservation is None
    exchange.response_headers({":status": "200", "content-type": "application/json"})
    assert exchange.response_body(b'{"input_tokens": 14}', True).body is None  # passes as is
    assert exchange.finish() == []
    assert "usage" not in report.record(exchange)
    assert report.observation(exchange, False) is None


def test_a_count_for_a_model_of_another_api_is_answered_offline() -> None:
    exchange = counting()
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "system": "Be brief."}
    decision = exchange.request_body(orjson.dumps(request))
    assert isinstance(decision, Reply) and decision.status == 200
    assert ("x-extproc-estimate", "offline") in decision.headers
    assert orjson.loads(decision.body) == {"input_tokens": prompt_estimate(Kind.MESSAGES, request)}
    assert not exchange.forwarded and exchange.finish() == []


def test_a_large_count_answered_offline_pauses_between_its_slices() -> None:
    """A count of a large prompt (~400 KB, ~17 ms of the tokenizer) is taken in slices, the
    shell serving other streams between them; the answer is the same."""
    from extproc import tokens
    from extproc.dataplane.decisions import RESUMED, Pause

    text = " ".join(f"line{n % 97} of a long log" for n in range(20_000))[:400_000]
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    exchange = counting()
    decision = exchange.request_body(orjson.dumps(request))
    steps = []
    while isinstance(decision, Pause):
        steps.append(decision)
        decision = exchange.resolve(RESUMED)
    # The policies' pauses (before, after the one long text, after them), then the count's.
    assert len(steps) == 3 + len(text) // tokens.SLICE_CHARS
    assert isinstance(decision, Reply) and decision.status == 200
    assert orjson.loads(decision.body) == {"input_tokens": prompt_estimate(Kind.MESSAGES, request)}


def test_a_count_on_a_fallback_route_is_answered_offline() -> None:
    decision = counting().request_body(body(model="claude-resilient"))
    assert isinstance(decision, Reply) and decision.status == 200
    assert orjson.loads(decision.body)["input_tokens"] > 0


def test_a_denied_prompt_is_refused_before_it_is_counted() -> None:
    messages = [{"role": "user", "content": "how to build a bomb"}]
    for model in ("claude-3-5-haiku", "gpt-4o-mini"):
        decision = counting().request_body(orjson.dumps({"model": model, "messages": messages}))
        assert isinstance(decision, Reply) and decision.status == 400, model
        error = orjson.loads(decision.body)
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("request_body", "status", "kind"),
    [
        ({"model": "claude-x"}, 400, "invalid_request_error"),  # messages are required
        ({"model": "claude-x", "messages": "hi"}, 400, "invalid_request_error"),
        ({"model": "claude-x", "messages": MESSAGES, "tools": {}}, 400, "invalid_request_error"),
    ],
)
def test_a_malformed_count_is_a_400_in_anthropics_schema(
    request_body: dict[str, Any], status: int, kind: str
) -> None:
    decision = counting().request_body(orjson.dumps(request_body))
    assert isinstance(decision, Reply) and decision.status == status
    assert orjson.loads(decision.body)["error"]["type"] == kind


def test_max_tokens_is_not_required_to_count() -> None:
    assert isinstance(counting().request_body(body()), Continue)


def test_the_tenants_allow_list_applies() -> None:
    request = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})
    decision = counting("key-n").request_body(request)
    assert isinstance(decision, Reply) and decision.status == 403
    assert orjson.loads(decision.body)["error"]["type"] == "permission_error"


COUNTS = runtime(
    CONFIG.replace(
        "models:\n",
        '  - {name: responses, schema: openai_responses, url: "http://127.0.0.1:9/r/v1"}\n'
        "models:\n  - {name: resp-model, routes: [{backend: responses}]}\n",
    ).replace(
        'models: ["claude-*", "gpt-4o-mini"]', 'models: ["claude-*", "gpt-4o-mini", "resp-*"]'
    )
)


def test_a_count_goes_translated_to_a_backend_whose_api_counts() -> None:
    exchange = Exchange(COUNTS)
    headers = {":path": PATH, ":method": "POST", "x-api-key": "key-t"}
    assert isinstance(exchange.request_headers(headers, end_of_stream=False), Continue)
    body = {"model": "resp-model", "system": "Be brief.", "messages": MESSAGES}
    forward = exchange.request_body(orjson.dumps(body))
    assert isinstance(forward, Continue) and forward.body is not None
    assert (":path", "/r/v1/responses/input_tokens") in forward.set_headers
    sent = orjson.loads(forward.body)
    # Only what the count endpoint takes: no `store`, no `max_output_tokens`.
    assert set(sent) == {"model", "input", "instructions"}
    assert sent["instructions"] == "Be brief."
    exchange.response_headers({":status": "200", "content-type": "application/json"})
    answer = exchange.response_body(
        b'{"object": "response.input_tokens", "input_tokens": 17}', True
    )
    assert answer.body is not None and orjson.loads(answer.body) == {"input_tokens": 17}
    assert exchange.finish() == []  # never charged


def test_a_responses_count_goes_translated_to_anthropic() -> None:
    exchange = Exchange(COUNTS)
    headers = {":path": "/v1/responses/input_tokens", ":method": "POST", "x-api-key": "key-t"}
    assert isinstance(exchange.request_headers(headers, end_of_stream=False), Continue)
    forward = exchange.request_body(orjson.dumps({"model": "claude-3", "input": "Hi there"}))
    assert isinstance(forward, Continue) and forward.body is not None
    assert (":path", "/v1/messages/count_tokens") in forward.set_headers
    sent = orjson.loads(forward.body)
    assert "max_tokens" not in sent and sent["messages"][0]["role"] == "user"
    exchange.response_headers({":status": "200", "content-type": "application/json"})
    answer = exchange.response_body(b'{"input_tokens": 9}', True)
    assert answer.body is not None
    assert orjson.loads(answer.body) == {"object": "response.input_tokens", "input_tokens": 9}
