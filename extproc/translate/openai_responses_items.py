"""The OpenAI Responses API's response object as both its JSON answer and its stream
write it: output items and their derived ids, statuses and stop reasons, usage."""

from __future__ import annotations

from typing import Any, Final

from extproc.accounting.usage import responses_usage
from extproc.translate import hub
from extproc.translate.hub import obj

# An incomplete response's reason, and the hub's stop for it (an unknown reason: cut short).
INCOMPLETE: Final = {"max_output_tokens": hub.Stop.MAX_TOKENS, "content_filter": hub.Stop.REFUSAL}
INCOMPLETE_REASONS: Final = {
    hub.Stop.MAX_TOKENS: "max_output_tokens",
    hub.Stop.CONTEXT_WINDOW: "max_output_tokens",
    hub.Stop.REFUSAL: "content_filter",
}


def read_stop(response: dict[str, Any], called: bool) -> hub.Stop:
    """The hub's stop for a response object's status; `called`: it holds a function call."""
    if response.get("status") == "incomplete":
        reason = obj(response.get("incomplete_details")).get("reason")
        return INCOMPLETE.get(str(reason), hub.Stop.MAX_TOKENS)
    return hub.Stop.TOOL_USE if called else hub.Stop.END


def status_of(stop: hub.Stop) -> tuple[str, dict[str, str] | None]:
    """A response's status and incomplete_details for the hub's stop."""
    reason = INCOMPLETE_REASONS.get(stop)
    return ("completed", None) if reason is None else ("incomplete", {"reason": reason})


def read_usage(usage: dict[str, Any]) -> hub.Usage:
    """The hub's counts (prompt tokens apart from those the prompt cache read or wrote)
    from the fields the meter reads."""
    found = responses_usage(usage)
    cached = found.get("cached_input_tokens", 0)
    written = found.get("cache_creation_input_tokens", 0)
    return hub.Usage(
        input=max(0, found.get("input_tokens", 0) - cached - written),
        cache_read=cached,
        cache_write=written,
        output=found.get("output_tokens", 0),
    )


def write_usage(usage: hub.Usage) -> dict[str, Any]:
    cached, written = usage.cache_read or 0, usage.cache_write or 0
    prompt = (usage.input or 0) + cached + written
    output = usage.output or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},  # the hub does not count them
        "total_tokens": prompt + output,
    }


# -- the response object and its items ---------------------------------------------------


def response_id(id: str) -> str:
    """An id in the Responses API's form (its SDKs and clients expect the `resp_` prefix)."""
    return id if id.startswith("resp_") else f"resp_{id}"


def item_id(prefix: str, response: str, index: int) -> str:
    """The id of output item `index` of a response: derived, so a JSON answer and its
    stream name their items alike."""
    return f"{prefix}{response[4:]}_{index}"


def response_object(
    id: str,
    model: str,
    created: int,
    state: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete: dict[str, str] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A response object. What the request said (tools, tool choice, sampling) is the
    client's own: the fields the SDKs require get the API's defaults."""
    return {
        "id": id,
        "object": "response",
        "created_at": created,
        "status": state,
        "error": error,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(id: str, text: str | None, state: str) -> dict[str, Any]:
    """An assistant message item: its text (None: just added, no content yet)."""
    content = [] if text is None else [output_text(text)]
    return {"id": id, "type": "message", "status": state, "role": "assistant", "content": content}


def call_item(id: str, call_id: str, name: str, arguments: str, state: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "status": state,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def summary(text: str) -> dict[str, str]:
    return {"type": "summary_text", "text": text}


def reasoning_item(id: str, text: str | None) -> dict[str, Any]:
    return {"id": id, "type": "reasoning", "summary": [] if text is None else [summary(text)]}


def reasoning_text(item: dict[str, Any]) -> str:
    """A reasoning item's text: its summary, or its reasoning text when it has no summary."""
    pieces = item.get("summary") or item.get("content")
    parts = pieces if isinstance(pieces, list) else ()
    return "\n\n".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )
