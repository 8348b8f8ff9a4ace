"""The fields of OpenAI's Responses API request (`POST /v1/responses`) the gateway checks,
with the types and ranges of OpenAI's spec as the pinned SDK types it
(`ResponseCreateParams`, `ResponseInputItemParam`, `ToolParam`)."""

from __future__ import annotations

from typing import Any

from extproc.apis.checks import (
    Check,
    Expected,
    anything,
    array,
    boolean,
    by_type,
    fields,
    integer,
    number,
    string,
    tagged,
)

_STRING_OR_PARTS = Expected("one of a string or array of objects", "a valid string or a valid list")
_STRING_OR_OBJECT = Expected("one of a string or object", "a valid string or a valid dictionary")
_TEXT = fields({"text": string}, required=("text",))
# Content parts by type, wherever they appear (a message's content, a function call's
# output): which role may carry which is OpenAI's to say. Other types pass unchecked.
PARTS: dict[str, Check] = {
    "input_text": _TEXT,
    "input_image": fields(
        {"image_url": string, "file_id": string, "detail": string}, required=("detail",)
    ),
    "input_file": fields(
        {"file_id": string, "file_data": string, "file_url": string, "filename": string}
    ),
    "output_text": fields({"text": string, "annotations": array(anything)}, required=("text",)),
    "refusal": fields({"refusal": string}, required=("refusal",)),
}
_CONTENT = by_type(_STRING_OR_PARTS, {str: None, list: array(tagged("type", PARTS))})
# A message item: `role` says whose (user, assistant, system, developer as published; a
# role OpenAI may add passes with its content checked).
_MESSAGE = fields(
    {"role": string, "content": _CONTENT, "status": string, "id": string},
    required=("role", "content"),
)
_SUMMARY = array(tagged("type", {"summary_text": _TEXT, "reasoning_text": _TEXT}))
# Items by type. OpenAI's own tools' calls and results (web search, file search, code
# interpreter, computer use, MCP, ...) pass as any unknown item does: the backend of the
# client's API answers them, and a translation refuses them by name.
ITEMS: dict[str, Check] = {
    "message": _MESSAGE,
    "function_call": fields(
        {"call_id": string, "name": string, "arguments": string, "id": string, "status": string},
        required=("call_id", "name", "arguments"),
    ),
    # call_id is optional in the pinned SDK (a program's call has a caller instead).
    "function_call_output": fields(
        {
            "call_id": string,
            "output": by_type(_STRING_OR_PARTS, {str: None, list: array(tagged("type", PARTS))}),
            "id": string,
            "status": string,
        },
        required=("output",),
    ),
    "reasoning": fields(
        {"id": string, "summary": _SUMMARY, "content": _SUMMARY, "encrypted_content": string},
        required=("id", "summary"),
    ),
    "item_reference": fields({"id": string}, required=("id",)),
}
_ITEM = tagged("type", ITEMS)


def _input_item(value: Any) -> None:
    """An item; a message may leave its `type` out (the SDK's EasyInputMessage)."""
    if type(value) is dict and value.get("type") is None:
        _MESSAGE(value)
    else:
        _ITEM(value)


_FUNCTION_TOOL = fields(
    {"name": string, "description": string, "parameters": anything, "strict": boolean},
    required=("name",),
)
# Tools by type: functions, and OpenAI's own tools the gateway knows the required fields of;
# the rest (web search, code interpreter, image generation, ...) are OpenAI's to check.
TOOLS: dict[str, Check] = {
    "function": _FUNCTION_TOOL,
    "custom": fields({"name": string, "description": string}, required=("name",)),
    "file_search": fields({"vector_store_ids": array(string)}, required=("vector_store_ids",)),
    "mcp": fields(
        {"server_label": string, "server_url": string, "connector_id": string},
        required=("server_label",),
    ),
}
_TOOL_CHOICE = by_type(
    _STRING_OR_OBJECT,
    {
        str: None,
        dict: tagged(
            "type",
            {
                "function": fields({"name": string}, required=("name",)),
                "custom": fields({"name": string}, required=("name",)),
                "mcp": fields({"server_label": string, "name": string}, required=("server_label",)),
                "allowed_tools": fields(
                    {"mode": string, "tools": array(anything)}, required=("mode", "tools")
                ),
            },
        ),
    },
)
_FORMAT = tagged(
    "type",
    {
        "text": anything,
        "json_object": anything,
        "json_schema": fields(
            {"name": string, "schema": anything, "description": string, "strict": boolean},
            required=("name", "schema"),
        ),
    },
)
RESPONSES = fields(
    {
        # No published bound on items: MAX_ITEMS, as every unbounded array.
        "input": by_type(_STRING_OR_PARTS, {str: None, list: array(_input_item)}),
        "instructions": string,
        "stream": boolean,
        "stream_options": fields({"include_obfuscation": boolean}),
        # The spec gives no minimum; OpenAI's API answers fewer than 16 itself.
        "max_output_tokens": integer(1),
        "max_tool_calls": integer(1),
        "temperature": number(0, 2),
        "top_p": number(0, 1),
        "top_logprobs": integer(0, 20),
        "tools": array(tagged("type", TOOLS)),
        "tool_choice": _TOOL_CHOICE,
        "parallel_tool_calls": boolean,
        "text": fields({"format": _FORMAT, "verbosity": string}),
        "reasoning": fields({"effort": string, "summary": string}),
        # 16 pairs of short strings, OpenAI's to check: the gateway does not walk them.
        "metadata": anything,
        "store": boolean,
        "previous_response_id": string,
        "background": boolean,
        "conversation": by_type(
            _STRING_OR_OBJECT, {str: None, dict: fields({"id": string}, required=("id",))}
        ),
        "prompt": fields(
            {"id": string, "version": string, "variables": anything}, required=("id",)
        ),
        "include": array(string),
        "truncation": string,
        "service_tier": string,
        "user": string,
        "safety_identifier": string,
        "prompt_cache_key": string,
    }
)
