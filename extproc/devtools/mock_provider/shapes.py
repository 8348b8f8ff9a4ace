"""Structured outputs as the mock answers them: for a JSON schema, a value of its shape
(so an SDK's `parse()` validates it), and for plain JSON mode an object holding the text.
Enough of JSON Schema for what SDKs generate from typed models: objects, arrays, scalars,
enums and constants, `anyOf`/`oneOf`/`allOf` (the first), `$ref` into `$defs`."""

from __future__ import annotations

from typing import Any

import orjson

# Nesting the mock follows before it answers a string: a recursive model stays finite.
MAX_DEPTH = 16
# Items an array gets: at least its `minItems`, at most this many.
MAX_ITEMS = 8


def value_for(schema: Any, text: str) -> Any:
    """A value that fits `schema`, with `text` in its strings."""
    return _value(schema, schema, text, 0)


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for key in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _value(schema: Any, root: Any, text: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return text
    if "$ref" in schema:
        return _value(_resolve(root, str(schema["$ref"])), root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _value(options[0], root, text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        fields = properties if isinstance(properties, dict) else {}
        return {name: _value(sub, root, text, depth + 1) for name, sub in fields.items()}
    if kind == "array":
        least = schema.get("minItems")
        count = min(max(least if isinstance(least, int) else 1, 1), MAX_ITEMS)
        return [_value(schema.get("items"), root, text, depth + 1) for _ in range(count)]
    if kind == "integer" or kind == "number":
        least = schema.get("minimum")
        number = least if isinstance(least, int | float) and not isinstance(least, bool) else 1
        return int(number) if kind == "integer" else float(number)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def formatted(text: str, answer_format: Any) -> str:
    """The answer's text in the format the request asks for: OpenAI's `response_format` or
    the Responses API's `text.format` (`json_schema` with its schema, `json_object`), or
    Anthropic's `output_config.format` (`json_schema`); `text` when none is asked."""
    if not isinstance(answer_format, dict):
        return text
    kind = answer_format.get("type")
    if kind == "json_object":
        return orjson.dumps({"text": text}).decode()
    if kind == "json_schema":
        schema = answer_format.get("schema")  # the Responses API's and Anthropic's place
        nested = answer_format.get("json_schema")  # Chat Completions' place
        if isinstance(nested, dict):
            schema = nested.get("schema")
        return orjson.dumps(value_for(schema, text)).decode()
    return text
