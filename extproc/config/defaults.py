"""Field defaults, read from the schema: each field's `(default)` option, written as in YAML.

The top-level sections always get their defaults; a message below them gets its own where
it is set (an absent `cache.redis` stays absent). A default is filled in by the same code
as the config file, so it cannot be something a config author could not write.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from extproc.config.schema import YamlLoader, fill_field
from extproc.config.v1 import options_pb2

# One message type's defaults: (field, value) to fill where unset, and the message fields
# to descend into, with the mapping of defaults a field adds for its message.
_Plan = tuple[tuple[tuple[FieldDescriptor, Any], ...], tuple[tuple[FieldDescriptor, Any], ...]]


def apply(config: Message) -> None:
    """Fill every unset field that has a default, throughout the config."""
    _apply(config, None, root=True)


def of(message_type: type[Message], name: str) -> Any:
    """One field's default, as a config gets it ("limits.max_request_bytes": an int)."""
    message = message_type()
    field = cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[name])
    _fill(message, [(field, yaml.load(_default_text(field), Loader=YamlLoader))])  # noqa: S506
    return getattr(message, name)


def _apply(message: Message, extra: dict[str, Any] | None, root: bool = False) -> None:
    own, children = _plan(message.DESCRIPTOR)
    if extra:
        _fill(message, ((message.DESCRIPTOR.fields_by_name[k], v) for k, v in extra.items()))
    _fill(message, own)
    for field, mapping in children:
        if field.is_repeated:
            for item in getattr(message, field.name):
                _apply(item, mapping)
        elif root or message.HasField(field.name):
            _apply(getattr(message, field.name), mapping)


def _fill(message: Message, defaults: Any) -> None:
    for field, value in defaults:
        if _is_set(message, field):
            continue
        problems: list[str] = []
        fill_field(message, field, value, field.full_name, problems)
        if problems:
            raise ValueError(f"bad default in the schema: {problems}")


def _is_set(message: Message, field: FieldDescriptor) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) > 0
    if field.has_presence:
        return message.HasField(field.name)
    return bool(getattr(message, field.name))


@functools.cache
def _plan(descriptor: Descriptor) -> _Plan:
    own = []
    children = []
    for field in descriptor.fields:
        text = _default_text(field)
        value = yaml.load(text, Loader=YamlLoader) if text else None  # noqa: S506 (safe)
        nested = field.message_type
        if nested is not None and not _is_leaf(nested):
            if value is not None or _has_defaults(nested):
                children.append((field, value))
        elif value is not None:
            own.append((field, value))
    return tuple(own), tuple(children)


def _default_text(field: FieldDescriptor) -> str:
    options = field.GetOptions()
    extension = options_pb2.default
    return options.Extensions[extension] if options.HasExtension(extension) else ""


def _is_leaf(descriptor: Descriptor) -> bool:
    """Durations and maps take a default as a whole value."""
    return descriptor.full_name == "google.protobuf.Duration" or descriptor.GetOptions().map_entry


def _has_defaults(descriptor: Descriptor) -> bool:
    own, children = _plan(descriptor)
    return bool(own or children)
