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
    fields,
    integer,
    missing,
    number,
    string,
    tagged,
)

_BLOCKS = Expected("a string or an array of blocks", "a valid string or a valid list")
_TEXT_BLOCK = fields({"text": string}, required=("text",))
_TEXT_BLOCKS = array(tagged("type", {"text": _TEXT_BLOCK}))
_IMAGE_BLOCK = fields(
    {
        "source": tagged(
            "type",
            {
                "base64": fields(
                    {"media_type": string, "data": string}, required=("media_type", "data")
                ),
                "url": fields({"url": string}, required=("url",)),
                "file": fields({"file_id": string}, required=("file_id",)),
            },
        )
    },
    required=("source",),
)
# Blocks the gateway does not read, but knows as published (GA and beta): the provider's
# own tools' calls and results (its server tools, its MCP connector's calls), compaction
# summaries (signed, like thinking), files. They pass as any unknown block does; a policy
# lets them through unread, where it refuses a block it does not know (text.py).
_UNREAD = (
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
    "mcp_tool_listing",
    "compaction",
    "tool_addition",
    "tool_removal",
    "fallback",
)


def _blocks(table: dict[str, Check]) -> Check:
    return by_type(_BLOCKS, {str: None, list: array(tagged("type", table))})


# Blocks by type, wherever they appear: which turn may carry which is the provider's to
# say. The gateway reads text (policy, estimates, translation), the text of documents and
# search results, tool calls and results (MCP's too), and thinking (translation drops it). A block
# inside another is checked one level down only: no check recurses into what a client
# can nest without end.
_DOCUMENT = fields(
    {
        "source": tagged(
            "type",
            {
                "text": fields({"data": string}, required=("data",)),
                "content": fields(
                    {"content": _blocks({"text": _TEXT_BLOCK, "image": _IMAGE_BLOCK})},
                    required=("content",),
                ),
            },
        ),
        "title": string,
        "context": string,
    },
    required=("source",),
)
_SEARCH_RESULT = fields(
    {"source": string, "title": string, "content": _TEXT_BLOCKS},
    required=("source", "title", "content"),
)
# What a tool result holds (`ToolResultBlockParam.content`).
RESULT_BLOCKS: dict[str, Check] = {
    "text": _TEXT_BLOCK,
    "image": _IMAGE_BLOCK,
    "document": _DOCUMENT,
    "search_result": _SEARCH_RESULT,
    "tool_reference": anything,
    "browser_state": anything,
}
BLOCKS: dict[str, Check] = {
    "text": _TEXT_BLOCK,
    "image": _IMAGE_BLOCK,
    "document": _DOCUMENT,
    "search_result": _SEARCH_RESULT,
    "tool_result": fields(
        {"tool_use_id": string, "content": _blocks(RESULT_BLOCKS), "is_error": boolean},
        required=("tool_use_id",),
    ),
    "mcp_tool_result": fields(
        {"tool_use_id": string, "content": _blocks({"text": _TEXT_BLOCK}), "is_error": boolean},
        required=("tool_use_id",),
    ),
    "tool_use": fields(
        {"id": string, "name": string, "input": anything}, required=("id", "name", "input")
    ),
    "thinking": fields(
        {"thinking": string, "signature": string}, required=("thinking", "signature")
    ),
    "redacted_thinking": fields({"data": string}, required=("data",)),
    **dict.fromkeys(_UNREAD, anything),
}
_CONTENT = _blocks(BLOCKS)
_TURN = fields({"content": _CONTENT}, required=("content",))
# Anthropic's API takes `system` turns too (`SystemMessageParam` in the pinned SDK, GA and
# beta: text blocks). A role it does not publish passes with its content checked.
ROLES: dict[str, Check] = {"user": _TURN, "assistant": _TURN, "system": _TURN}
_OTHER_ROLE = fields({"content": _CONTENT})


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
_MESSAGE_FIELDS: dict[str, Check] = {
    "messages": array(
        tagged("role", ROLES, other=_OTHER_ROLE),
        min_items=1,
        max_items=100_000,
    ),
    # 0 is documented: it warms the prompt cache without generating.
    "max_tokens": integer(0),
    "system": by_type(_BLOCKS, {str: None, list: _TEXT_BLOCKS}),
    "stream": boolean,
    "temperature": number(0, 1),
    "top_p": number(0, 1),
    "top_k": integer(0),
    "stop_sequences": array(string),
    # Anthropic's tool search takes catalogs of up to 10,000 tools.
    "tools": array(_anthropic_tool, max_items=10_000),
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
}
MESSAGES = fields(_MESSAGE_FIELDS, required=("messages", "max_tokens"))
# POST /v1/messages/count_tokens: the prompt a Messages request would send.
COUNT_TOKENS = fields(
    {
        name: _MESSAGE_FIELDS[name]
        for name in ("messages", "system", "tools", "tool_choice", "thinking")
    },
    required=("messages",),
)
