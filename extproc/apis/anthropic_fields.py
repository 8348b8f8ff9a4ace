"""The fields of Anthropic's Messages request the gateway checks, with the types and ranges
of the Messages API reference as the pinned Anthropic SDK types it (`MessageCreateParams`,
its GA and beta content blocks)."""

from __future__ import annotations

from typing import Any

from extproc.apis.checks import (
    Check,
    Expected,
    anything,
    array,
    boolean,
    by_type,
    enum,
    fields,
    integer,
    missing,
    number,
    string,
    tagged,
)

_BLOCKS = Expected("a string or an array of blocks", "a valid string or a valid list")
_TEXT_BLOCK = fields({"text": string}, required=("text",))
_IMAGE_BLOCK = fields(
    {
        "source": tagged(
            "type",
            {
                "base64": fields(
                    {
                        "media_type": enum("image/jpeg", "image/png", "image/gif", "image/webp"),
                        "data": string,
                    },
                    required=("media_type", "data"),
                ),
                "url": fields({"url": string}, required=("url",)),
                "file": fields({"file_id": string}, required=("file_id",)),
            },
        )
    },
    required=("source",),
)
_DOCUMENT_BLOCK = fields({"source": anything}, required=("source",))
_TOOL_RESULT_BLOCK = fields(
    {
        "tool_use_id": string,
        "content": by_type(
            _BLOCKS,
            {
                str: None,
                list: array(
                    tagged(
                        "type",
                        {
                            "text": _TEXT_BLOCK,
                            "image": _IMAGE_BLOCK,
                            "document": _DOCUMENT_BLOCK,
                            "search_result": anything,
                            "tool_reference": anything,
                            "browser_state": anything,
                        },
                    )
                ),
            },
        ),
        "is_error": boolean,
    },
    required=("tool_use_id",),
)
# Blocks either turn may carry: the gateway reads none of their fields (GA and beta).
_OTHER_BLOCKS = dict.fromkeys(
    (
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "advisor_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "mcp_tool_listing",
        "compaction",
        "tool_addition",
        "tool_removal",
        "fallback",
    ),
    anything,
)
# By role, as the gateway reads them: tool results come from the user's side (policy reads
# them as the tool's words), tool calls and thinking from the assistant's.
_USER_BLOCKS = {
    "text": _TEXT_BLOCK,
    "image": _IMAGE_BLOCK,
    "document": _DOCUMENT_BLOCK,
    "tool_result": _TOOL_RESULT_BLOCK,
    **_OTHER_BLOCKS,
}
_ASSISTANT_BLOCKS = {
    "text": _TEXT_BLOCK,
    "image": _IMAGE_BLOCK,
    "document": _DOCUMENT_BLOCK,
    "tool_use": fields(
        {"id": string, "name": string, "input": anything}, required=("id", "name", "input")
    ),
    "thinking": fields(
        {"thinking": string, "signature": string}, required=("thinking", "signature")
    ),
    "redacted_thinking": fields({"data": string}, required=("data",)),
    **_OTHER_BLOCKS,
}
_SYSTEM_TEXT = by_type(_BLOCKS, {str: None, list: array(tagged("type", {"text": _TEXT_BLOCK}))})


def _turn(blocks: dict[str, Check]) -> Check:
    content = by_type(_BLOCKS, {str: None, list: array(tagged("type", blocks))})
    return fields({"content": content}, required=("content",))


def _anthropic_tool(value: Any) -> None:
    """A client tool needs a name and an input schema; server tools and toolsets (`type`
    set to anything but "custom") have their own shapes, left to the provider."""
    _TOOL_FIELDS(value)
    if value.get("type") in (None, "custom"):
        for name in ("name", "input_schema"):
            if value.get(name) is None:
                raise missing(name)


_TOOL_FIELDS = fields(
    {"name": string, "description": string, "input_schema": anything, "type": string}
)
_NO_PARALLEL = {"disable_parallel_tool_use": boolean}
MESSAGES = fields(
    {
        "messages": array(
            tagged(
                "role",
                {
                    "user": _turn(_USER_BLOCKS),
                    "assistant": _turn(_ASSISTANT_BLOCKS),
                    "system": fields({"content": _SYSTEM_TEXT}, required=("content",)),
                },
            ),
            min_items=1,
            max_items=100_000,
        ),
        # 0 is documented: it warms the prompt cache without generating.
        "max_tokens": integer(0),
        "system": _SYSTEM_TEXT,
        "stream": boolean,
        "temperature": number(0, 1),
        "top_p": number(0, 1),
        "top_k": integer(0),
        "stop_sequences": array(string),
        "tools": array(_anthropic_tool),
        "tool_choice": tagged(
            "type",
            {
                "auto": fields(_NO_PARALLEL),
                "any": fields(_NO_PARALLEL),
                "none": anything,
                "tool": fields({"name": string, **_NO_PARALLEL}, required=("name",)),
            },
        ),
        "metadata": fields({"user_id": string}),
        "thinking": tagged(
            "type",
            {
                "enabled": fields({"budget_tokens": integer(1024)}, required=("budget_tokens",)),
                "disabled": anything,
                "adaptive": anything,
            },
        ),
    },
    required=("messages", "max_tokens"),
)
