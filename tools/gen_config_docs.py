"""Write the configuration reference page from the config schema's comments.

`make docs` runs it before building the site; a test fails when the committed page differs
from what it writes, as `make proto`'s test does for the generated code. The page is
committed rather than made only at build time so that it reads on GitHub next to the other
pages and a change to the schema's comments shows in review as a change to the reference.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
SOURCE = "extproc/config/v1/config.proto"
PAGE = ROOT / "docs" / "configuration" / "reference.md"
ROOT_MESSAGE = "Config"
# Where the docs link to the repository's files (the chart's `home` too); a test checks
# that every such link names a file or folder that exists.
REPO_FILES = "https://github.com/extproc/extproc/blob/main/"

# Field numbers inside descriptor.proto, for SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SYNTAX = 4, 5, 12
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _F.TYPE_STRING: "string",
    _F.TYPE_BOOL: "boolean",
    _F.TYPE_UINT32: "integer",
    _F.TYPE_UINT64: "integer",
    _F.TYPE_INT32: "integer",
    _F.TYPE_INT64: "integer",
    _F.TYPE_DOUBLE: "number",
    _F.TYPE_FLOAT: "number",
}
_WELL_KNOWN = {".google.protobuf.Duration": 'duration ("250ms", "2s", "1.5m", "1h")'}


@dataclass
class Field:
    name: str
    proto: descriptor_pb2.FieldDescriptorProto
    comment: str
    oneof: list[str]  # the other members of its oneof, itself included


@dataclass
class Message:
    name: str  # dotted within the package: "CachePolicy", "Deprecation.AfterSunset"
    comment: str
    fields: list[Field] = field(default_factory=list)
    map_entry: bool = False


@dataclass
class Enum:
    name: str
    comment: str
    values: list[tuple[str, str]]  # (name, comment), the unset value left out


@dataclass
class Schema:
    header: str
    messages: dict[str, Message]  # by full name (".extproc.config.v1.Config")
    enums: dict[str, Enum]


def descriptor(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorProto:
    """The schema file compiled by protoc, comments included."""
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "config.pb"
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{include}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            SOURCE,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def _clean(comment: str) -> str:
    return " ".join(line.strip() for line in comment.strip().splitlines())


def read_schema(file: descriptor_pb2.FileDescriptorProto) -> Schema:
    comments: dict[tuple[int, ...], str] = {}
    header = ""
    for location in file.source_code_info.location:
        path = tuple(location.path)
        text = location.leading_comments or location.trailing_comments
        if text:
            comments[path] = _clean(text)
        if path == (_FILE_SYNTAX,) and location.leading_detached_comments:
            header = _clean(location.leading_detached_comments[0])
        elif path == (_FILE_SYNTAX,) and location.leading_comments:
            header = _clean(location.leading_comments)
    prefix = f".{file.package}."
    messages: dict[str, Message] = {}
    enums: dict[str, Enum] = {}

    def add_enum(
        enum: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...]
    ) -> None:
        values = [
            (value.name, comments.get((*path, _ENUM_VALUE, index), ""))
            for index, value in enumerate(enum.value)
            if value.number != 0
        ]
        enums[prefix + name] = Enum(name, comments.get(path, ""), values)

    def add_message(
        message: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...]
    ) -> None:
        entry = Message(name, comments.get(path, ""), map_entry=message.options.map_entry)
        real_oneofs: dict[int, list[str]] = {}
        for item in message.field:
            if item.HasField("oneof_index") and not item.proto3_optional:
                real_oneofs.setdefault(item.oneof_index, []).append(item.name)
        for index, item in enumerate(message.field):
            members = []
            if item.HasField("oneof_index") and not item.proto3_optional:
                members = real_oneofs[item.oneof_index]
            comment = comments.get((*path, _MESSAGE_FIELD, index), "")
            entry.fields.append(Field(item.name, item, comment, members))
        messages[prefix + name] = entry
        for index, nested in enumerate(message.nested_type):
            add_message(nested, f"{name}.{nested.name}", (*path, _MESSAGE_NESTED, index))
        for index, enum in enumerate(message.enum_type):
            add_enum(enum, f"{name}.{enum.name}", (*path, _MESSAGE_ENUM, index))

    for index, message in enumerate(file.message_type):
        add_message(message, message.name, (_FILE_MESSAGE, index))
    for index, enum in enumerate(file.enum_type):
        add_enum(enum, enum.name, (_FILE_ENUM, index))
    return Schema(header, messages, enums)


def slug(name: str) -> str:
    """The heading's anchor as MkDocs (and GitHub) make it from a name like "Budget.Window"."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower())


_CODE = re.compile(r"(`[^`]*`)")


def markdown(text: str) -> str:
    """Comment text for a table cell: characters Markdown would read as markup escaped,
    except inside code spans."""
    parts = _CODE.split(text)
    for index in range(0, len(parts), 2):
        part = parts[index].replace("\\", "\\\\").replace("*", "\\*")
        part = part.replace("<", "&lt;").replace(">", "&gt;")
        parts[index] = part
    return "".join(parts).replace("|", "\\|")


def walk(schema: Schema) -> Iterator[tuple[str, str]]:
    """(type name, YAML path) for every message and enum reachable from Config, depth
    first in field order; a type met again under another path is yielded again."""
    root = next(name for name, m in schema.messages.items() if m.name == ROOT_MESSAGE)

    def visit(type_name: str, path: str, seen: tuple[str, ...]) -> Iterator[tuple[str, str]]:
        yield type_name, path
        message = schema.messages.get(type_name)
        if message is None or type_name in seen:
            return
        for item in message.fields:
            target = _target(schema, item.proto)
            if target is None:
                continue
            repeated = item.proto.label == _F.LABEL_REPEATED and not _is_map(schema, item.proto)
            child = f"{path}.{item.name}" if path else item.name
            yield from visit(target, child + ("[]" if repeated else ""), (*seen, type_name))

    yield from visit(root, "", ())


def _is_map(schema: Schema, item: descriptor_pb2.FieldDescriptorProto) -> bool:
    message = schema.messages.get(item.type_name)
    return message is not None and message.map_entry


def _target(schema: Schema, item: descriptor_pb2.FieldDescriptorProto) -> str | None:
    """The documented type a field refers to (a message or an enum), if any."""
    if item.type == _F.TYPE_ENUM:
        return item.type_name
    if item.type == _F.TYPE_MESSAGE and item.type_name not in _WELL_KNOWN:
        if _is_map(schema, item):
            return None
        return item.type_name
    return None


def type_cell(schema: Schema, item: descriptor_pb2.FieldDescriptorProto) -> str:
    if _is_map(schema, item):
        key, value = schema.messages[item.type_name].fields
        return f"map of {type_cell(schema, key.proto)} to {type_cell(schema, value.proto)}"
    if item.type in _SCALARS:
        text = _SCALARS[item.type]
    elif item.type_name in _WELL_KNOWN:
        text = _WELL_KNOWN[item.type_name]
    elif item.type == _F.TYPE_ENUM:
        name = schema.enums[item.type_name].name
        text = f"[{name}](#{slug(name)})"
    else:
        name = schema.messages[item.type_name].name
        text = f"[{name}](#{slug(name)})"
    if item.label == _F.LABEL_REPEATED:
        return f"list of {text}"
    return text


def _field_row(schema: Schema, item: Field) -> str:
    description = markdown(item.comment)
    if len(item.oneof) > 1:
        others = ", ".join(f"`{name}`" for name in item.oneof if name != item.name)
        description = f"{description} Not with {others}.".strip()
    return f"| `{item.name}` | {type_cell(schema, item.proto)} | {description} |"


def render(schema: Schema) -> str:
    paths: dict[str, list[str]] = {}
    for type_name, path in walk(schema):
        paths.setdefault(type_name, [])
        if path and path not in paths[type_name]:
            paths[type_name].append(path)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by tools/gen_config_docs.py from "
        f"proto/{SOURCE}: edit the schema's comments, then run `make docs`. -->",
        "",
        f"Generated from the comments of [`{Path(SOURCE).name}`]"
        f"({REPO_FILES}proto/{SOURCE}), the schema of the"
        " config file, so it says what the code reads. The [overview](index.md) shows a"
        " whole config with comments; the feature pages explain what each part does.",
        "",
        markdown(schema.header),
        "",
        "Each section is one object of the file; *at* lists where it appears"
        " (`[]`: an item of a list).",
    ]
    for type_name, where in paths.items():
        lines.append("")
        if type_name in schema.enums:
            enum = schema.enums[type_name]
            lines += [f"## {enum.name}", ""]
            if enum.comment:
                lines += [markdown(enum.comment), ""]
            lines += [_at(where), "", "| value | meaning |", "|---|---|"]
            lines += [f"| `{name.lower()}` | {markdown(text)} |" for name, text in enum.values]
            continue
        message = schema.messages[type_name]
        lines += [f"## {message.name}", ""]
        if message.comment:
            lines += [markdown(message.comment), ""]
        if where:
            lines += [_at(where), ""]
        if not message.fields:
            lines.append("No fields: `{}`.")
            continue
        lines += ["| field | type | description |", "|---|---|---|"]
        lines += [_field_row(schema, item) for item in message.fields]
    return "\n".join(lines) + "\n"


def _at(where: list[str]) -> str:
    return "At " + ", ".join(f"`{path}`" for path in where) + "."


def undocumented(schema: Schema) -> list[str]:
    """Fields, enum values and enums reachable from Config that have no comment."""
    missing = []
    for type_name, _ in walk(schema):
        if type_name in schema.enums:
            enum = schema.enums[type_name]
            missing += [f"{enum.name}.{name}" for name, text in enum.values if not text]
            continue
        message = schema.messages[type_name]
        missing += [f"{message.name}.{item.name}" for item in message.fields if not item.comment]
    return sorted(set(missing))


def main(argv: list[str]) -> int:
    page = Path(argv[1]) if len(argv) > 1 else PAGE
    schema = read_schema(descriptor())
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(schema))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
