"""The schema's single-field rules (its `buf.validate` annotations), checked by protovalidate.

Each violation becomes a problem in the loader's words: the field path as written in YAML
(`models[2].routes[0].weight`, a map key as `headers.host`) and the rule's message. The
project's own rules carry their messages; a few standard ones are worded here.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.message import Message

# Standard rules whose own message ("value is required") is not in the loader's style.
_WORDING = {
    "required": "required",
    "uint32.gt": "must be positive",
    "duration.gt": "must be positive",
}


@functools.cache
def _validator() -> Any:
    # Imported on first use: processes that never load a config do not pay for it.
    import protovalidate

    return protovalidate.Validator()


def check(config: Message) -> list[tuple[str, str]]:
    """(field path, message) for every rule the config breaks, in field order."""
    found = []
    for violation in _validator().collect_violations(config):
        proto = violation.proto
        path = field_path(proto.field.elements)
        message = proto.message
        if proto.rule_id == "uint32.lte":
            message = f"at most {violation.rule_value}"
        found.append((path, _WORDING.get(proto.rule_id, message)))
    return found


def field_path(elements: Any) -> str:
    """`a.b[2].c` from protovalidate's path elements; map keys join with a dot."""
    parts: list[str] = []
    for element in elements:
        parts.append(f".{element.field_name}" if parts else element.field_name)
        subscript = element.subscript
        if subscript is None:
            continue
        if subscript.field == "index":
            parts.append(f"[{subscript.value}]")
        else:
            parts.append(f".{subscript.value}")
    return "".join(parts)
