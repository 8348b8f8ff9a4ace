"""What the mock reads from a request: its text, tools and images, token counts, and the
headers that report what arrived."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

# Headers describing the request body, set once it is read (x-mock-body-bytes, ...).
BODY_HEADERS = web.RequestKey("mock_body_headers", dict[str, str])


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: one token per 4 characters, rounded up
    (the usual rule of thumb; constant time, so the mock never limits a benchmark)."""
    return (len(text) + 3) // 4


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def last_user_text(messages: list[Any]) -> str:
    """The text the reply echoes: the last user turn's, or the last tool result's."""
    for message in reversed(messages):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool":
            return f"tool result: {_text_of(message.get('content'))}"
        if message.get("role") == "user":
            content = message.get("content")
            results = [
                block
                for block in (content if isinstance(content, list) else [])
                if isinstance(block, dict) and block.get("type") == "tool_result"
            ]
            if results:
                return "tool result: " + "".join(_text_of(r.get("content")) for r in results)
            return _text_of(content)
    return ""


def tool_call(body: dict[str, Any]) -> tuple[str, str] | None:
    """With tools offered and a user's question last, the mock calls the first tool with
    {"text": <the question>}: (tool name, arguments as JSON)."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    text = last_user_text(body.get("messages", []))
    if text.startswith("tool result: "):
        return None
    function = tools[0].get("function")
    name = function.get("name") if isinstance(function, dict) else tools[0].get("name")
    return str(name), orjson.dumps({"text": text}).decode()


def prompt_tokens(body: dict[str, Any]) -> int:
    texts = [_text_of(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)]
    system = body.get("system")
    if system is not None:
        texts.append(_text_of(system))
    return sum(count_tokens(t) for t in texts)


# Credential headers whose values the mock reports (as digests), by label.
_ECHOED_CREDENTIALS = (
    ("authorization", "authorization"),
    ("x-api-key", "api-key"),
    ("api-key", "azure-api-key"),
)


def image_data(body: dict[str, Any]) -> Iterator[str]:
    """The base64 data of a request's images: OpenAI `image_url` data URLs, Anthropic
    base64 `image` sources."""
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict):
                continue
            image, source = part.get("image_url"), part.get("source")
            if isinstance(image, dict) and str(image.get("url", "")).startswith("data:"):
                yield str(image["url"]).partition(",")[2]
            elif part.get("type") == "image" and isinstance(source, dict):
                yield str(source.get("data", ""))


def part_types(body: dict[str, Any]) -> str:
    types = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            types.append(str(part.get("type")) if isinstance(part, dict) else "?")
    return ",".join(types)


def echo_headers(request: web.Request, prompt: str | None = None) -> dict[str, str]:
    headers = {
        "x-mock-path": request.path_qs,
        "x-mock-host": request.headers.get("host", ""),
        "x-mock-headers": ",".join(sorted({k.lower() for k in request.headers})),
        **request.get(BODY_HEADERS, {}),
    }
    for name, label in _ECHOED_CREDENTIALS:
        values = request.headers.getall(name, [])
        if values:
            joined = ", ".join(values)
            headers[f"x-mock-{label}-sha256"] = hashlib.sha256(joined.encode()).hexdigest()
    if prompt is not None:
        headers["x-mock-prompt-sha256"] = hashlib.sha256(prompt.encode()).hexdigest()
    return headers
