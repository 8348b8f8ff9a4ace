"""Helpers both translation directions share."""

from __future__ import annotations

import re
from typing import Any

import orjson

from extproc.apis import ApiError

# Names of request fields a translation dropped (no place for them in the target API).
Dropped = list[str]
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)


class Untranslatable(Exception):
    """The request asks for something the target API cannot do: a 400 for the client."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def obj(value: Any) -> dict[str, Any]:
    """A JSON object from provider data, or an empty one for anything else."""
    return value if isinstance(value, dict) else {}


def count(value: Any) -> int:
    """A token count from provider data; 0 for anything that is not a whole number."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def invalid(path: str, problem: str) -> Untranslatable:
    return Untranslatable(
        ApiError(400, f"Invalid '{path}': {problem}.", "invalid_value", path.split("[")[0])
    )


def unsupported(path: str, problem: str) -> Untranslatable:
    """A value the client's API (or a compatible server) takes that the target API cannot
    express: validation lets it pass, for a backend of the client's own API to answer."""
    return Untranslatable(
        ApiError(400, f"Unsupported value for '{path}': {problem}.", "unsupported_value", path)
    )


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a data: URL, or None for any other URL."""
    match = _DATA_URL.match(url)
    return (match.group(1), match.group(2)) if match else None


def json_arguments(arguments: Any) -> Any:
    """Tool-call arguments (a JSON string in OpenAI) as the object Anthropic expects; text
    that is not a JSON object is kept under "arguments" rather than lost."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def text_of_parts(content: Any, path: str) -> str:
    """The text of a string, or of an array of text parts/blocks joined by blank lines
    (system prompts, tool results); any other part cannot be translated there."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of text parts")
    texts = []
    for index, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        else:
            raise unsupported(f"{path}[{index}].type", "only text can be translated here")
    return "\n\n".join(texts)
