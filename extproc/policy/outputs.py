"""Response policy over JSON bodies: check model output, then put redacted values back."""

from __future__ import annotations

from typing import Any

from extproc.apis import Kind, Schema
from extproc.apis.text import response_slots
from extproc.policy.engine import Decisions, Redactions, rewrite, ruled_out, scan_pii
from extproc.policy.rules import PolicySet


def check_output(
    policies: PolicySet, text: str, decisions: Decisions, redactions: Redactions
) -> tuple[str, bool]:
    """Model output after the response rules: (new text, blocked)."""
    out = ruled_out(policies, "response", text)
    for rule in policies.output_deny:
        if id(rule) not in out and rule.search(text) is not None:
            decisions.add(rule.policy, "deny", rule.name, "block", rule.shadow, "response")
            if not rule.shadow:
                return text, True
    detection = policies.output_detection
    if detection.applied:
        findings, block = scan_pii(text, detection, decisions, "response", out)
        if block is not None:
            return text, True
        if findings:
            text = rewrite(text, findings, detection, redactions, output=True)
    return text, False


def filtered_response(api: Schema, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    """The response as the provider itself reports withheld output."""
    if api is Schema.ANTHROPIC:
        return {**body, "content": [], "stop_reason": "refusal", "stop_sequence": None}
    if api is Schema.OPENAI_RESPONSES:
        # As the Responses API ends an answer its content filter stopped: incomplete, for
        # that reason; here with none of the output, as a blocked answer gets no text.
        incomplete = {"reason": "content_filter"}
        return {**body, "status": "incomplete", "incomplete_details": incomplete, "output": []}
    choices = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if kind is Kind.COMPLETIONS:
            choices.append({**choice, "text": "", "finish_reason": "content_filter"})
        else:
            message = {"role": "assistant", "content": None, "refusal": None}
            choices.append({**choice, "message": message, "finish_reason": "content_filter"})
    return {**body, "choices": choices}


def process_json(
    policies: PolicySet,
    redactions: Redactions,
    decisions: Decisions,
    api: Schema,
    kind: Kind,
    body: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """The response body after output checks and restoration; (body, changed)."""
    changed = False
    for slot in response_slots(api, kind, body):
        text, block = check_output(policies, slot.text, decisions, redactions)
        if block:
            return filtered_response(api, kind, body), True
        text = redactions.restore(text, slot.json_text)
        if text != slot.text:
            slot.text = text
            changed = True
    return body, changed
