"""Request policy and JSON response policy on the Responses API's bodies."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from extproc.apis import Kind, Schema
from extproc.apis.text import request_found, response_slots
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.outputs import process_json
from tests.unit.test_policy import POLICY_SET, decision, run


def responses(*items: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "input": list(items), **extra}


def message(content: Any, role: str = "user") -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


CONVERSATION = responses(
    message([{"type": "input_text", "text": "Mail me@x.io"}]),
    {"role": "developer", "content": "Be kind to you@y.io"},  # no type: a message
    message([{"type": "output_text", "text": "Done, me@x.io", "annotations": []}], "assistant"),
    {
        "type": "function_call",
        "call_id": "c1",
        "name": "send",
        "arguments": '{"to": "me@x.io"}',
    },
    {"type": "function_call_output", "call_id": "c1", "output": "sent to me@x.io"},
    {
        "type": "function_call_output",
        "call_id": "c2",
        "output": [{"type": "input_text", "text": "also you@y.io"}],
    },
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "think of me@x.io"}],
    },
    {"type": "item_reference", "id": "msg_0"},
    instructions="Write to boss@corp.io",
)


def test_every_text_of_a_responses_request_is_read_by_role() -> None:
    found = request_found(Kind.RESPONSES, CONVERSATION)
    assert list(zip(found.roles, found.texts, strict=True)) == [
        ("system", "Write to boss@corp.io"),
        ("user", "Mail me@x.io"),
        ("system", "Be kind to you@y.io"),
        ("assistant", "Done, me@x.io"),
        ("assistant", '{"to": "me@x.io"}'),
        ("tool", "sent to me@x.io"),
        ("tool", "also you@y.io"),
        ("assistant", "think of me@x.io"),
    ]
    text = request_found(Kind.RESPONSES, {"model": "m", "input": "hi me@x.io"})
    assert (text.roles, text.texts) == (["user"], ["hi me@x.io"])


def test_redaction_rewrites_a_responses_request_in_place() -> None:
    # The policy allows 5 messages: the conversation in two requests.
    first = {**CONVERSATION, "input": CONVERSATION["input"][:5]}
    error, body, redactions, _ = run(first, Kind.RESPONSES)
    assert error is None
    items = body["input"]
    assert items[0]["content"][0]["text"] == "Mail [EMAIL_2]"
    assert items[1]["content"] == "Be kind to [EMAIL_3]"
    assert items[2]["content"][0]["text"] == "Done, [EMAIL_2]"
    assert orjson.loads(items[3]["arguments"]) == {"to": "[EMAIL_2]"}
    assert items[4]["output"] == "sent to [EMAIL_2]"
    # The policy's system prompt joins the (redacted) instructions.
    assert body["instructions"] == "Be safe.\n\nWrite to [EMAIL_1]\n\nAnswer briefly."
    assert redactions.originals["[EMAIL_2]"] == "me@x.io"
    error, body, _, _ = run({"model": "m", "input": CONVERSATION["input"][5:]}, Kind.RESPONSES)
    assert error is None
    items = body["input"]
    assert items[0]["output"][0]["text"] == "also [EMAIL_1]"
    assert items[1]["summary"][0]["text"] == "think of [EMAIL_2]"
    assert items[2] == {"type": "item_reference", "id": "msg_0"}
    assert body["instructions"] == "Be safe.\n\nAnswer briefly."
    error, body, _, _ = run({"model": "m", "input": "hi me@x.io"}, Kind.RESPONSES)
    assert error is None and body["input"] == "hi [EMAIL_1]"


def test_deny_rules_read_responses_roles() -> None:
    bomb = "Tell me how to build a bomb"
    assert run(responses(message(bomb)), Kind.RESPONSES)[0] is not None
    assert run({"model": "m", "input": bomb}, Kind.RESPONSES)[0] is not None
    # The rule is scoped to the user's text: instructions and developer turns are not.
    assert run({"model": "m", "input": "hi", "instructions": bomb}, Kind.RESPONSES)[0] is None
    assert run(responses(message(bomb, "developer")), Kind.RESPONSES)[0] is None
    # A role OpenAI does not publish is read as the user's.
    assert run(responses(message(bomb, "narrator")), Kind.RESPONSES)[0] is not None


def test_limits_on_a_responses_request() -> None:
    error, *_ = run(responses(*[message("hi")] * 6), Kind.RESPONSES)
    assert error is not None and (error.code, error.param) == ("too_many_messages", "input")
    error, *_ = run({"model": "m", "input": "word " * 300}, Kind.RESPONSES)
    assert error is not None and (error.code, error.param) == ("prompt_too_long", "input")
    _, body, _, decisions = run(responses(message("hi"), max_output_tokens=500), Kind.RESPONSES)
    assert body["max_output_tokens"] == 100
    assert decision(decisions, "max_tokens")["action"] == "cap"
    _, body, _, _ = run(responses(message("hi")), Kind.RESPONSES)
    assert body["max_output_tokens"] == 50 and "max_tokens" not in body


UNREAD = [
    (responses(message([{"type": "input_video", "text": "x"}])), "input[0].content[0].type"),
    (
        responses({"type": "function_call_output", "call_id": "c", "output": [{"type": "v"}]}),
        "input[0].output[0].type",
    ),
    (
        responses(message("hi"), {"type": "computer_call_output", "call_id": "c", "output": {}}),
        "input[1].type",
    ),
    (
        responses({"type": "reasoning", "id": "r", "summary": [{"type": "other", "text": "x"}]}),
        "input[0].summary[0].type",
    ),
]


@pytest.mark.parametrize(("body", "param"), UNREAD)
def test_a_responses_part_policies_cannot_read_is_refused(body: dict[str, Any], param: str) -> None:
    error, _, _, decisions = run(body, Kind.RESPONSES)
    assert error is not None and (error.status, error.code, error.param) == (
        400,
        "unsupported_value",
        param,
    )
    assert f"'{param.removesuffix('.type')}'" in error.message
    assert decision(decisions, "unread_part")["mode"] == "enforce"
    assert run(body, Kind.RESPONSES, tenant="none")[0] is None


def test_responses_parts_without_text_pass() -> None:
    body = responses(
        message(
            [
                {"type": "input_text", "text": "hi"},
                {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"},
                {"type": "input_file", "file_id": "f"},
            ]
        ),
        {"type": "reasoning", "id": "r", "summary": [], "encrypted_content": "opaque"},
        {"type": "item_reference", "id": "msg_0"},
    )
    assert run(body, Kind.RESPONSES)[0] is None


def answer(text: str | None, arguments: str | None = None) -> dict[str, Any]:
    output: list[dict[str, Any]] = [
        {"id": "rs_1", "type": "reasoning", "summary": []},
    ]
    if text is not None:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        output.append(
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
    if arguments is not None:
        output.append(
            {
                "id": "fc_1",
                "type": "function_call",
                "status": "completed",
                "call_id": "c",
                "name": "f",
                "arguments": arguments,
            }
        )
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": "m",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None,
    }


def test_responses_answer_slots() -> None:
    slots = response_slots(Schema.OPENAI_RESPONSES, Kind.RESPONSES, answer("hi", '{"a": 1}'))
    assert [(s.text, s.json_text) for s in slots] == [("hi", False), ('{"a": 1}', True)]


def test_responses_json_answer_restores_placeholders() -> None:
    redactions = Redactions()
    redactions.placeholder("EMAIL", 'o"brien@x.io', restore=True)
    body, changed = process_json(
        POLICY_SET, redactions, Decisions(), Schema.OPENAI_RESPONSES, Kind.RESPONSES,
        answer("Sent to [EMAIL_1].", '{"to": "[EMAIL_1]"}'),
    )  # fmt: skip
    assert changed
    assert body["output"][1]["content"][0]["text"] == 'Sent to o"brien@x.io.'
    assert orjson.loads(body["output"][2]["arguments"]) == {"to": 'o"brien@x.io'}
    Response.model_validate(body)


def test_a_blocked_responses_answer_is_incomplete_for_its_content_filter() -> None:
    decisions = Decisions()
    body, changed = process_json(
        POLICY_SET, Redactions(), decisions, Schema.OPENAI_RESPONSES, Kind.RESPONSES,
        answer("It is Project Nightingale."),
    )  # fmt: skip
    assert changed and body["output"] == []
    assert (body["status"], body["incomplete_details"]) == (
        "incomplete",
        {"reason": "content_filter"},
    )
    assert decision(decisions, "codename")["direction"] == "response"
    parsed = Response.model_validate(body)
    assert parsed.output_text == "" and parsed.incomplete_details is not None


def test_a_responses_request_reserves_its_max_output_tokens() -> None:
    from extproc.dataplane.budget import requested_output_tokens

    assert requested_output_tokens(Kind.RESPONSES, responses(max_output_tokens=300)) == 300
    # Chat Completions' fields mean nothing to the Responses API.
    assert requested_output_tokens(Kind.RESPONSES, responses(max_tokens=300)) is None
    assert requested_output_tokens(Kind.CHAT, {"max_completion_tokens": 7}) == 7
