"""Map plain data (parsed YAML) onto a protobuf message, reporting every problem with its path.

protobuf's json_format stops at the first error and words it in protobuf's terms; a
config author needs all problems at once, each naming the field as written in YAML
(`models[2].routes[0].weight: expected an integer, got "ten"`).
"""

from __future__ import annotations

import re
from typing import Any, cast

import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

# Names of policies and their rules, which policies.py checks: the pattern of the
# schema's (name) rule (options.proto), which checks every other name.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_INT_RANGES = {
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}


class YamlLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: no implicit timestamps (dates stay strings and are checked by the
    schema), and only true/false are booleans (YAML 1.1 also reads yes/no/on/off)."""


YamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


def parse_duration(text: str) -> float | None:
    """Seconds for "250ms", "2s", "1.5m", "1h"; None when malformed."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def fill(message: Message, data: Any, path: str, problems: list[str]) -> None:
    """Set message fields from data; append a problem for anything that does not fit."""
    descriptor = message.DESCRIPTOR
    if data is None:
        return
    if not isinstance(data, dict):
        problems.append(f"{path or '<top>'}: expected a mapping, got {_describe(data)}")
        return
    oneofs_seen: dict[str, str] = {}
    for key, value in data.items():
        field_path = _join(path, str(key))
        # The stubs type upb's descriptors separately; they are the same thing at run time.
        field = cast(
            FieldDescriptor | None,
            descriptor.fields_by_name.get(key) if isinstance(key, str) else None,
        )
        if field is None:
            known = ", ".join(sorted(descriptor.fields_by_name))
            problems.append(f"{field_path}: unknown field (known: {known})")
            continue
        oneof = field.containing_oneof
        if oneof is not None and not oneof.name.startswith("_"):
            if oneof.name in oneofs_seen:
                problems.append(
                    f"{field_path}: only one of {oneofs_seen[oneof.name]!r} and {key!r} may be set"
                )
                continue
            oneofs_seen[oneof.name] = key
        if value is None:
            continue
        fill_field(message, field, value, field_path, problems)


def fill_field(
    message: Message, field: FieldDescriptor, value: Any, path: str, problems: list[str]
) -> None:
    """Set one field from data (a mapping, list or scalar, as YAML gives it)."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {_describe(value)}")
            return
        target = getattr(message, field.name)
        value_field = field.message_type.fields_by_name["value"]
        for k, v in value.items():
            converted = _scalar(value_field, v, f"{path}.{k}", problems)
            if converted is not None:
                target[str(k)] = converted
        return
    if field.is_repeated:
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_describe(value)}")
            return
        container = getattr(message, field.name)
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if field.message_type is not None:
                fill(container.add(), item, item_path, problems)
            else:
                converted = _scalar(field, item, item_path, problems)
                if converted is not None:
                    container.append(converted)
        return
    if field.message_type is not None:
        if field.message_type.full_name == Duration.DESCRIPTOR.full_name:
            _set_duration(getattr(message, field.name), value, path, problems)
            return
        fill(getattr(message, field.name), value, path, problems)
        # An empty mapping (`tls: {}`) still marks the sub-message as present.
        getattr(message, field.name).SetInParent()
        return
    converted = _scalar(field, value, path, problems)
    if converted is not None:
        setattr(message, field.name, converted)


def _set_duration(target: Duration, value: Any, path: str, problems: list[str]) -> None:
    seconds: float | None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value)
    else:
        seconds = None
    if seconds is None or seconds < 0:
        problems.append(
            f'{path}: expected a duration such as "2s" or "250ms", got {_describe(value)}'
        )
        return
    target.FromNanoseconds(round(seconds * 1e9))


def _scalar(field: FieldDescriptor, value: Any, path: str, problems: list[str]) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(f"{path}: expected a string, got {_describe(value)}")
            return None
        return str(value)
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {_describe(value)}")
            return None
        return value
    if kind in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {_describe(value)}")
            return None
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            problems.append(f"{path}: {value} is out of range [{low}, {high}]")
            return None
        return value
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{path}: expected a number, got {_describe(value)}")
            return None
        return float(value)
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        enum = field.enum_type
        names = [v.name for v in enum.values if not v.name.endswith("_UNSPECIFIED")]
        if isinstance(value, str) and value.upper() in names:
            return enum.values_by_name[value.upper()].number
        choices = ", ".join(n.lower() for n in names)
        problems.append(f"{path}: expected one of {choices}, got {_describe(value)}")
        return None
    problems.append(f"{path}: unsupported field type")
    return None
