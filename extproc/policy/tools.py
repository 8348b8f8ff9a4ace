"""Policy on MCP tool traffic: a tools/call's arguments before the server sees them, its
result before the agent does.

Tool traffic has no roles: every deny and PII rule whose `apply_to` names tool_call or
tool_result reads it, whatever its `roles`. The exchange's `Redactions` carry placeholders
from the arguments to the result, where they are put back as the policy restores. Pure code
over parsed JSON; the caller turns a `Refusal` into its JSON-RPC error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from extproc.policy.engine import Decisions, Redactions, described, rewrite, ruled_out, scan_pii
from extproc.policy.rules import DenyRule, Detection, PolicySet

TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a tool call may not go on, naming the rule or detector, never the text."""

    policy: str
    kind: str  # "deny", "pii", or "content" (arguments nested past what is read)
    rule: str  # the deny rule, the detector, or "max_depth"
    message: str


def scan_arguments(
    policies: PolicySet,
    arguments: Any,
    redactions: Redactions,
    decisions: Decisions,
    *,
    max_depth: int,
) -> Any | Refusal:
    """The arguments to send (the same object when nothing changed), or a refusal. Every
    string value anywhere in them is read; keys, numbers and booleans are not."""
    if not policies.inspects_tool_calls:
        return arguments
    texts: list[str] = []
    detection = policies.tool_call_detection
    if not _strings(arguments, texts, 1, max_depth):
        enforced = _unread(policies.tool_call_deny, detection, decisions, TOOL_CALL)
        if enforced is None:
            return arguments
        return Refusal(
            enforced,
            "content",
            "max_depth",
            f"The tool call's arguments are nested deeper than {max_depth} levels, "
            f"which policy '{enforced}' cannot read.",
        )
    outs = [ruled_out(policies, TOOL_CALL, text) for text in texts]
    rule = _denied(policies.tool_call_deny, texts, outs, decisions, TOOL_CALL)
    if rule is not None:
        message = f"The tool call was blocked by policy rule '{rule.name}'."
        return Refusal(rule.policy, "deny", rule.name, message)
    if not detection.applied or not texts:
        return arguments
    for text in texts:
        redactions.avoid(text)
    written: list[str] = []
    for text, out in zip(texts, outs, strict=True):
        findings, block = scan_pii(text, detection, decisions, TOOL_CALL, out)
        if block is not None:
            return Refusal(
                block.policy,
                "pii",
                block.detector.name,
                f"The tool call's arguments contain {described(block.detector)}, "
                f"which policy '{block.policy}' does not allow.",
            )
        written.append(rewrite(text, findings, detection, redactions) if findings else text)
    if all(new is old for new, old in zip(written, texts, strict=True)):
        return arguments
    return _rebuilt(arguments, iter(written))


def result_needs(policies: PolicySet, redactions: Redactions) -> bool:
    """Whether a tools/call result must be read: to check it or to put values back."""
    return bool(redactions.originals) or policies.inspects_tool_results


def scan_result(
    policies: PolicySet,
    result: Any,
    redactions: Redactions,
    decisions: Decisions,
    *,
    max_depth: int,
) -> Any:
    """A tools/call result after the tool_result rules and restoration: the same object
    when nothing changed, an error result when a rule blocks it.

    Read: `text` content items and every string in `structuredContent`. Not read: images,
    audio, resource links and embedded resources (their text included), keys, `_meta`."""
    if not isinstance(result, dict) or not result_needs(policies, redactions):
        return result
    found = result.get("content")
    content: list[Any] = found if isinstance(found, list) else []
    items = [i for i, item in enumerate(content) if _is_text(item)]
    texts: list[str] = [content[i]["text"] for i in items]
    structured = result.get("structuredContent")
    inspects = policies.inspects_tool_results
    if not _strings(structured, texts, 1, max_depth):
        # Structured content past what is read: an enforced reader refuses it; otherwise
        # it passes as it came (placeholders in it stay).
        enforced = (
            _unread(
                policies.tool_result_deny, policies.tool_result_detection, decisions, TOOL_RESULT
            )
            if inspects
            else None
        )
        if enforced is not None:
            return _error_result(
                f"The tool result is nested deeper than {max_depth} levels, "
                f"which policy '{enforced}' cannot read."
            )
        structured = None
        del texts[len(items) :]
    written = texts
    if inspects:
        checked = _checked(policies, texts, redactions, decisions)
        if isinstance(checked, str):
            return _error_result(checked)
        written = checked
    if redactions.originals:
        written = [redactions.restore(text) for text in written]
    if all(new is old for new, old in zip(written, texts, strict=True)):
        return result
    rebuilt = dict(result)
    if items:
        replaced = list(content)
        for index, text in zip(items, written[: len(items)], strict=True):
            if text is not replaced[index]["text"]:
                replaced[index] = {**replaced[index], "text": text}
        rebuilt["content"] = replaced
    if structured is not None:
        rebuilt["structuredContent"] = _rebuilt(structured, iter(written[len(items) :]))
    return rebuilt


def _checked(
    policies: PolicySet, texts: list[str], redactions: Redactions, decisions: Decisions
) -> list[str] | str:
    """The texts after the tool_result rules, or the message of the error that replaces
    the result."""
    outs = [ruled_out(policies, TOOL_RESULT, text) for text in texts]
    rule = _denied(policies.tool_result_deny, texts, outs, decisions, TOOL_RESULT)
    if rule is not None:
        return f"The tool result was blocked by policy rule '{rule.name}'."
    detection = policies.tool_result_detection
    if not detection.applied:
        return texts
    written: list[str] = []
    for text, out in zip(texts, outs, strict=True):
        findings, block = scan_pii(text, detection, decisions, TOOL_RESULT, out)
        if block is not None:
            return (
                f"The tool result contains {described(block.detector)}, "
                f"which policy '{block.policy}' does not allow."
            )
        # Values the server wrote are the output's: numbered after the arguments'
        # placeholders and never restored.
        written.append(
            rewrite(text, findings, detection, redactions, output=True) if findings else text
        )
    return written


def _denied(
    rules: tuple[DenyRule, ...],
    texts: list[str],
    outs: list[frozenset[int]],
    decisions: Decisions,
    direction: str,
) -> DenyRule | None:
    """The first enforced deny rule that matches; every match is recorded once per rule.
    `outs`: each text's rules ruled out."""
    for rule in rules:
        for text, out in zip(texts, outs, strict=True):
            if id(rule) not in out and rule.search(text) is not None:
                decisions.add(rule.policy, "deny", rule.name, "block", rule.shadow, direction)
                if not rule.shadow:
                    return rule
                break
    return None


def _unread(
    deny: tuple[DenyRule, ...], detection: Detection, decisions: Decisions, direction: str
) -> str | None:
    """Text past the depth read: recorded for every policy that would read it; the first
    enforced one, which refuses it."""
    readers = [(rule.policy, rule.shadow) for rule in deny]
    readers += [(rule.policy, rule.shadow) for entry in detection.applied for rule in entry.rules]
    enforced = None
    for policy, shadow in dict.fromkeys(readers):
        decisions.add(policy, "content", "max_depth", "block", shadow, direction)
        if not shadow and enforced is None:
            enforced = policy
    return enforced


def _error_result(message: str) -> dict[str, Any]:
    """A tool result the agent reads as the tool's failure (MCP's `isError`), in place of
    one a policy blocked: the rule's name, none of the result."""
    return {"content": [{"type": "text", "text": message}], "isError": True}


def _is_text(item: Any) -> bool:
    return (
        isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str)
    )


def _strings(value: Any, out: list[str], depth: int, max_depth: int) -> bool:
    """Every string in value, in document order, into out; False when an array or object
    is nested deeper than max_depth (the outermost is depth 1)."""
    if isinstance(value, str):
        out.append(value)
        return True
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return True
    if depth > max_depth:
        return False
    # Loops, not comprehensions: one frame per level keeps the deepest config (512) far
    # from the interpreter's recursion limit.
    for child in children:  # noqa: SIM110
        if not _strings(child, out, depth + 1, max_depth):
            return False
    return True


def _rebuilt(value: Any, texts: Iterator[str]) -> Any:
    """A copy of value with its strings, in document order, taken from texts (value was
    walked by `_strings` within its depth)."""
    if isinstance(value, str):
        return next(texts)
    if isinstance(value, dict):
        copied: dict[str, Any] = {}
        for key, child in value.items():
            copied[key] = _rebuilt(child, texts)
        return copied
    if isinstance(value, list):
        items: list[Any] = []
        for child in value:
            items.append(_rebuilt(child, texts))
        return items
    return value
