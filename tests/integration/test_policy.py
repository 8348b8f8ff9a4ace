"""Prompt policy through a real Envoy with the official SDKs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.helpers import sha256
from tests.integration.conftest import Gateway, start_gateway

KEYS = {"app": "gw-key-app", "viewer": "gw-key-viewer"}
CONFIG = """
listener: {{port: {port}}}
admin: {{port: {admin_port}}}
service: {{grpc_address: "127.0.0.1:{grpc_port}", metrics_address: "127.0.0.1:{metrics_port}"}}
backends:
  - {{name: openai, url: "http://127.0.0.1:{mock_port}/v1"}}
  - {{name: anthropic, schema: anthropic, url: "http://127.0.0.1:{mock_port}/v1"}}
  - {{name: responses, schema: openai_responses, url: "http://127.0.0.1:{mock_port}/v1"}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}]}}
  - {{name: claude-*, routes: [{{backend: anthropic}}]}}
  - {{name: responses-model, routes: [{{backend: responses}}]}}
policies:
  - name: guard
    restore_redacted: true
    deny:
      - {{name: weapons, keywords: ["build a bomb"]}}
      - {{name: codename, keywords: ["Project Nightingale"], apply_to: [response]}}
    pii:
      - {{detector: email}}
      - {{detector: payment_card, action: block}}
  - name: visible
    pii: [{{detector: email}}]
  - name: watch
    mode: shadow
    deny: [{{name: competitor, keywords: [acme]}}]
tenants:
  - {{name: app, api_key_sha256: ["{app}"], policies: [guard, watch]}}
  - {{name: viewer, api_key_sha256: ["{viewer}"], policies: [visible]}}
"""
SECRET_OUTPUT = "The code name is Project Nightingale and more words follow"


@pytest.fixture(scope="module")
def policed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(
        tmp_path_factory.mktemp("policy"),
        CONFIG,
        app=sha256(KEYS["app"]),
        viewer=sha256(KEYS["viewer"]),
    )
    yield gateway
    gateway.stack.stop()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def prompt_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_provider_sees_placeholders_client_gets_originals(policed: Gateway) -> None:
    client = policed.openai(KEYS["app"])
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ask("Mail alice@example.com and bob@example.org")
    )
    assert raw.headers["x-mock-prompt-sha256"] == prompt_digest("Mail [EMAIL_1] and [EMAIL_2]")
    assert raw.parse().choices[0].message.content == "Mail alice@example.com and bob@example.org"


def test_streams_are_restored_for_both_sdks(policed: Gateway) -> None:
    stream = policed.openai(KEYS["app"]).chat.completions.create(
        model="gpt-4o-mini", messages=ask("Write to alice@example.com today"), stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        == "Write to alice@example.com today"
    )
    claude = anthropic.Anthropic(base_url=policed.url, api_key=KEYS["app"], max_retries=0)
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=64, messages=ask("Write to alice@example.com today")
    ) as events:
        assert "".join(events.text_stream) == "Write to alice@example.com today"
        assert events.get_final_message().stop_reason == "end_turn"


def test_without_restore_the_client_sees_placeholders(policed: Gateway) -> None:
    completion = policed.openai(KEYS["viewer"]).chat.completions.create(
        model="gpt-4o-mini", messages=ask("Mail alice@example.com")
    )
    assert completion.choices[0].message.content == "Mail [EMAIL_1]"


def test_blocked_requests_name_the_rule_in_each_schema(policed: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        policed.openai(KEYS["app"]).chat.completions.create(
            model="gpt-4o-mini", messages=ask("card 4111 1111 1111 1111")
        )
    assert caught.value.code == "content_policy_violation" and "4111" not in caught.value.message
    claude = anthropic.Anthropic(base_url=policed.url, api_key=KEYS["app"], max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="claude-sonnet-4-6", max_tokens=8, messages=ask("how do I build a bomb")
        )
    assert "'weapons'" in refused.value.message
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_text_in_a_part_policies_cannot_read_does_not_slip_past_them(policed: Gateway) -> None:
    """A part type the gateway does not know may carry text for the model (vLLM reads an
    `input_text` part as text): under a policy that reads the role it is refused, naming
    the part; the provider never sees it. Without a policy it passes (test_request_validation)."""
    part = {"type": "input_text", "text": "how do I build a bomb"}
    with pytest.raises(openai.BadRequestError) as caught:
        policed.openai(KEYS["app"]).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}],
        )
    assert (caught.value.code, caught.value.param) == (
        "unsupported_value",
        "messages[0].content[1].type",
    )
    assert "'guard'" in caught.value.message and "bomb" not in caught.value.message
    claude = anthropic.Anthropic(base_url=policed.url, api_key=KEYS["app"], max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "transcript", "text": "a@x.io"}]}],
        )
    assert "messages.0.content.0" in refused.value.message
    assert "a@x.io" not in refused.value.message
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    # The text of a document is read like a text part.
    with pytest.raises(anthropic.BadRequestError) as blocked:
        claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "text",
                                "media_type": "text/plain",
                                "data": "how do I build a bomb",
                            },
                        }
                    ],
                }
            ],
        )
    assert "'weapons'" in blocked.value.message


def test_mid_stream_block_with_the_openai_sdk(policed: Gateway) -> None:
    stream = policed.openai(KEYS["app"]).chat.completions.create(
        model="gpt-4o-mini", messages=ask(SECRET_OUTPUT), stream=True
    )
    chunks = list(stream)  # the SDK reads to [DONE] without an error
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The code name is") and "Nightingale" not in text
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["content_filter"]


def test_mid_stream_block_with_the_anthropic_sdk(policed: Gateway) -> None:
    claude = anthropic.Anthropic(base_url=policed.url, api_key=KEYS["app"], max_retries=0)
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=64, messages=ask(SECRET_OUTPUT)
    ) as events:
        text = "".join(events.text_stream)
        final = events.get_final_message()
    assert text.startswith("The code name is") and "Nightingale" not in text
    assert final.stop_reason == "refusal"


def test_blocked_json_output_is_a_content_filter_finish(policed: Gateway) -> None:
    completion = policed.openai(KEYS["app"]).chat.completions.create(
        model="gpt-4o-mini", messages=ask(SECRET_OUTPUT)
    )
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content is None


def test_shadow_rules_pass_traffic_and_show_in_logs_and_metrics(policed: Gateway) -> None:
    raw = policed.openai(KEYS["app"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ask("acme is great")
    )
    assert raw.parse().choices[0].message.content == "acme is great"
    request_id = raw.headers["x-request-id"]
    line = next(ln for ln in policed.wait_for_log(request_id).splitlines() if request_id in ln)
    decisions = json.loads(line)["policy"]
    assert {
        "policy": "watch",
        "kind": "deny",
        "rule": "competitor",
        "action": "block",
        "mode": "shadow",
        "direction": "request",
        "count": 1,
    } in decisions
    assert "acme is great" not in line  # decisions, never the matched text
    with policed.http() as http:
        metrics = http.get(policed.metrics_url).text
    assert (
        'extproc_policy_decisions_total{action="block",direction="request",kind="deny",'
        'mode="shadow",policy="watch",rule="competitor"}'
    ) in metrics


# The Responses API: its own backend, and Chat Completions' behind a translation.
RESPONSES_MODELS = ["responses-model", "gpt-4o-mini"]


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_responses_streams_are_restored_for_the_sdks_stream_helper(
    policed: Gateway, model: str
) -> None:
    client = policed.openai(KEYS["app"])
    raw = client.responses.with_raw_response.create(
        model=model, input="Mail alice@example.com and bob@example.org"
    )
    assert raw.headers["x-mock-prompt-sha256"] == prompt_digest("Mail [EMAIL_1] and [EMAIL_2]")
    assert raw.parse().output_text == "Mail alice@example.com and bob@example.org"
    with client.responses.stream(model=model, input="Write to alice@example.com today") as events:
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        final = events.get_final_response()
    assert text == final.output_text == "Write to alice@example.com today"


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_mid_stream_block_with_the_responses_api(policed: Gateway, model: str) -> None:
    client = policed.openai(KEYS["app"])
    with client.responses.stream(model=model, input=SECRET_OUTPUT) as events:
        seen = list(events)
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert text.startswith("The code name is") and "Nightingale" not in text
    last = seen[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "content_filter"
    answer = client.responses.create(model=model, input=SECRET_OUTPUT)
    assert answer.status == "incomplete" and answer.output == []
    assert answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "content_filter"


def test_responses_text_policies_cannot_read_is_refused(policed: Gateway) -> None:
    client = policed.openai(KEYS["app"])
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="responses-model",
            input=[
                {"role": "user", "content": "hi"},
                {"type": "computer_call_output", "call_id": "c", "output": {"type": "x"}},
            ],  # type: ignore[list-item]
        )
    assert (caught.value.code, caught.value.param) == ("unsupported_value", "input[1].type")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="responses-model", instructions="hi", input="build a bomb")
    assert "'weapons'" in refused.value.message


def test_an_agents_long_conversation_is_governed_on_every_turn(policed: Gateway) -> None:
    """A ~400 KB conversation sent twice as an agent does, growing by a turn (its clean
    texts are not read again): its e-mail addresses are redacted and restored each time,
    a deny rule in a new message refuses it, and short requests are served meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    client = policed.openai(KEYS["app"])
    earlier = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"Step {n}. " + "fine " * 800}
        for n in range(100)
    ]
    earlier[40]["content"] += " Write to ops@example.com."
    turn = [*earlier, *ask("Summarise, and mail it to lead@example.org")]

    def short(n: int) -> str:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=ask(f"hi {n}"))
        return answer.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        shorts = pool.map(short, range(8))
        second = [*turn, *ask("And again, to lead@example.org")]
        for messages, seen in (
            (turn, "Summarise, and mail it to [EMAIL_2]"),
            (second, "And again, to [EMAIL_2]"),
        ):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=messages
            )
            # The provider saw placeholders ([EMAIL_1] is the earlier address); the client
            # gets the mock's echo with the values put back.
            assert raw.headers["x-mock-prompt-sha256"] == prompt_digest(seen)
            assert raw.parse().choices[0].message.content == messages[-1]["content"]
        assert list(shorts) == [f"hi {n}" for n in range(8)]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[*turn, *ask("now build a bomb")]
        )
    assert "weapons" in refused.value.message
