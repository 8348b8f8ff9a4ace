"""The service's decisions written as Envoy's ext_proc replies (its requests are read in
incoming.py)."""

from __future__ import annotations

import struct
from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from extproc import names
from extproc.dataplane.decisions import Continue, Decision, Reply

_OVERWRITE: Final = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_Mode = processing_mode_pb2.ProcessingMode
# Full modes: a mode_override replaces the filter's processing mode for the stream.
SKIP_REST: Final = _Mode(
    request_header_mode=_Mode.SEND,
    request_body_mode=_Mode.NONE,
    request_trailer_mode=_Mode.SKIP,
    response_header_mode=_Mode.SKIP,
    response_body_mode=_Mode.NONE,
    response_trailer_mode=_Mode.SKIP,
)
# The response-headers reply turns on the response body only where a policy must read it
# (as full modes, by the reader's mode: "buffered" or "streamed").
RESPONSE_BODY_MODES: Final = {
    name: _Mode(
        request_header_mode=_Mode.SEND,
        request_body_mode=_Mode.BUFFERED,
        request_trailer_mode=_Mode.SKIP,
        response_header_mode=_Mode.SEND,
        response_body_mode=mode,
        response_trailer_mode=_Mode.SKIP,
    )
    for name, mode in (("buffered", _Mode.BUFFERED), ("streamed", _Mode.STREAMED))
}


# Replies are written as bytes here, not built as protobuf objects: filling a reply's
# messages and its metadata's map through upb's Python objects, then serialising them, cost
# more than writing them (docs/decisions/hand-built-chunk-replies.md). The constants are
# Final: compiled code reads a Final module constant from a C variable, any other
# module-level name from the module's dictionary. Fields go in field-number order, as upb
# writes them; tests parse each reply back and compare it with the same reply built
# through the objects. A reply is a list of parts joined once: each message's size is
# counted as its parts are listed, and its tag and length go before them, so that nothing
# is copied twice, a body included. Parts are appended one by one: extending the list by a
# tuple of them builds the tuple and goes through a slice assignment.


def _tag(message: type, name: str, wire_type: int) -> bytes:
    return _varint(_field_number(message, name) << 3 | wire_type)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return b"".join((tag, _varint(len(payload)), payload))


def _string(tag: bytes, text: str) -> bytes:
    return _delimited(tag, text.encode())


def _mutation(parts: list[bytes], set_headers: list[tuple[str, str]], remove: list[str]) -> int:
    """Lists a HeaderMutation's fields (each header overwritten or added, as raw bytes);
    their size."""
    size = 0
    for name, value in set_headers:
        key, raw = name.encode(), value.encode("latin-1")
        key_size, raw_size = _varint(len(key)), _varint(len(raw))
        header = len(_HEADER_KEY) + len(key_size) + len(key)
        header += len(_HEADER_RAW) + len(raw_size) + len(raw)
        header_size = _varint(header)
        option = len(_OPTION_HEADER) + len(header_size) + header + len(_OPTION_OVERWRITE)
        option_size = _varint(option)
        parts.append(_SET_HEADERS)
        parts.append(option_size)
        parts.append(_OPTION_HEADER)
        parts.append(header_size)
        parts.append(_HEADER_KEY)
        parts.append(key_size)
        parts.append(key)
        parts.append(_HEADER_RAW)
        parts.append(raw_size)
        parts.append(raw)
        parts.append(_OPTION_OVERWRITE)
        size += len(_SET_HEADERS) + len(option_size) + option
    for name in remove:
        text = name.encode()
        text_size = _varint(len(text))
        parts.append(_REMOVE_HEADERS)
        parts.append(text_size)
        parts.append(text)
        size += len(_REMOVE_HEADERS) + len(text_size) + len(text)
    return size


def _continue(phase: bytes, decision: Continue) -> list[bytes]:
    """A ProcessingResponse's parts that answer `phase` (a HeadersResponse or a
    BodyResponse: both hold the CommonResponse as their field 1); other fields may follow."""
    common: list[bytes] = []
    size = 0
    if decision.replace_body:
        common.append(_STATUS_REPLACE)
        size += len(_STATUS_REPLACE)
    if decision.set_headers or decision.remove_headers:
        mutation: list[bytes] = []
        mutation_size = _mutation(mutation, decision.set_headers, decision.remove_headers)
        length = _varint(mutation_size)
        common.append(_HEADER_MUTATION)
        common.append(length)
        common.extend(mutation)
        size += len(_HEADER_MUTATION) + len(length) + mutation_size
    body = decision.body
    if body is not None:
        if body:
            body_size = _varint(len(body))
            field = len(_BODY) + len(body_size) + len(body)
            field_size = _varint(field)
            common.append(_BODY_MUTATION)
            common.append(field_size)
            common.append(_BODY)
            common.append(body_size)
            common.append(body)
            size += len(_BODY_MUTATION) + len(field_size) + field
        else:
            common.append(_CLEAR_BODY)
            size += len(_CLEAR_BODY)
    if decision.clear_route_cache:
        common.append(_CLEAR_ROUTE_CACHE)
        size += len(_CLEAR_ROUTE_CACHE)
    common_size = _varint(size)
    answer = len(_RESPONSE) + len(common_size) + size
    parts = [phase, _varint(answer), _RESPONSE, common_size]
    parts.extend(common)
    return parts


def _metadata(parts: list[bytes], values: dict[str, str | int | float]) -> None:
    """Lists the dynamic_metadata field: `values` in the service's namespace, a Struct
    in a Struct."""
    entries: list[bytes] = []
    size = 0
    for key, value in values.items():
        if isinstance(value, str):
            entry = _STRING_ENTRIES.get((key, value))
            if entry is None:
                entry = _entry(key, _string(_STRING_VALUE, value))
                if len(value) <= _CACHED_VALUE_CHARS:
                    if len(_STRING_ENTRIES) >= _CACHED_ENTRIES:
                        _STRING_ENTRIES.clear()
                    _STRING_ENTRIES[key, value] = entry
            entries.append(entry)
            size += len(entry)
            continue
        if isinstance(value, bool):
            entry = _entry(key, _BOOL_VALUES[value])
        else:
            # A number's Value is always 9 bytes: all before its 8 is the key's.
            head = _NUMBER_HEADS.get(key)
            if head is None:
                head = _entry(key, _NUMBER_VALUE + bytes(8))[:-8]
                if len(_NUMBER_HEADS) < _CACHED_NUMBER_HEADS:
                    _NUMBER_HEADS[key] = head
            entries.append(head)
            size += len(head)
            entry = _double(value)
        entries.append(entry)
        size += len(entry)
    inner_size = _varint(size)
    value = len(_STRUCT_VALUE) + len(inner_size) + size
    value_size = _varint(value)
    namespace = len(_NAMESPACE_PREFIX) + len(value_size) + value
    namespace_size = _varint(namespace)
    struct = len(_FIELDS) + len(namespace_size) + namespace
    parts.append(_DYNAMIC_METADATA)
    parts.append(_varint(struct))
    parts.append(_FIELDS)
    parts.append(namespace_size)
    parts.append(_NAMESPACE_PREFIX)
    parts.append(value_size)
    parts.append(_STRUCT_VALUE)
    parts.append(inner_size)
    parts.extend(entries)


def _entry(key: str, value: bytes) -> bytes:
    """A Struct's fields entry: `key` and the Value whose fields are `value`."""
    return _delimited(_FIELDS, _string(_ENTRY_KEY, key) + _delimited(_ENTRY_VALUE, value))


def immediate(reply: Reply) -> bytes:
    parts = [_delimited(_IMMEDIATE_STATUS, _HTTP_STATUS_CODE + _varint(reply.status))]
    if reply.headers:
        mutation: list[bytes] = []
        _mutation(mutation, reply.headers, [])
        parts.append(_delimited(_IMMEDIATE_HEADERS, b"".join(mutation)))
    if reply.body:
        parts.append(_delimited(_IMMEDIATE_BODY, reply.body))
    parts.append(_string(_IMMEDIATE_DETAILS, f"extproc_{reply.status}"))
    return _delimited(IMMEDIATE, b"".join(parts))


def request_headers_reply(decision: Decision) -> bytes:
    if isinstance(decision, Reply):
        return immediate(decision)
    parts = _continue(_REQUEST_HEADERS, decision)
    if decision.skip_request_body:
        parts.append(_SKIP_REST)
    return b"".join(parts)


def request_body_reply(decision: Decision) -> bytes:
    if isinstance(decision, Reply):
        return immediate(decision)
    parts = _continue(_REQUEST_BODY, decision)
    if decision.metadata:
        _metadata(parts, decision.metadata)
    return b"".join(parts)


def response_headers_reply(decision: Continue) -> bytes:
    parts = _continue(_RESPONSE_HEADERS, decision)
    if decision.response_body is not None:
        parts.append(_BODY_MODES[decision.response_body])
    return b"".join(parts)


def response_body_reply(decision: Continue) -> bytes:
    parts = _continue(_RESPONSE_BODY, decision)
    if decision.metadata:
        _metadata(parts, decision.metadata)
    return b"".join(parts)


def passthrough(kind: str) -> bytes:
    """The reply that lets a phase the service does not read pass unchanged."""
    return _PASSTHROUGH[kind]


def is_immediate(reply: bytes) -> bool:
    """Whether `reply` answers the client itself: its first field is immediate_response
    (a reply holds one phase's field or that one, written first)."""
    return reply.startswith(IMMEDIATE)


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    if value < 0x4000:
        # Two bytes joined: bytes() of a tuple is a call, and costs several times more.
        return _BYTE[value & 0x7F | 0x80] + _BYTE[value >> 7]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_BYTE: Final = [bytes((value,)) for value in range(0x100)]


def _field_number(message: type, name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number  # type: ignore[attr-defined, no-any-return]


# Wire types (of a length-delimited field, a varint, a 64-bit number).
_LENGTH: Final = 2
_VARINT: Final = 0
_FIXED64: Final = 1

# The replies' fields: each tag with its wire type.
_REQUEST_HEADERS: Final = _tag(ext.ProcessingResponse, "request_headers", _LENGTH)
_RESPONSE_HEADERS: Final = _tag(ext.ProcessingResponse, "response_headers", _LENGTH)
_REQUEST_BODY: Final = _tag(ext.ProcessingResponse, "request_body", _LENGTH)
_RESPONSE_BODY: Final = _tag(ext.ProcessingResponse, "response_body", _LENGTH)
IMMEDIATE: Final = _tag(ext.ProcessingResponse, "immediate_response", _LENGTH)
_DYNAMIC_METADATA: Final = _tag(ext.ProcessingResponse, "dynamic_metadata", _LENGTH)
_MODE_OVERRIDE: Final = _tag(ext.ProcessingResponse, "mode_override", _LENGTH)
# HeadersResponse.response and BodyResponse.response: the same field.
_RESPONSE: Final = _tag(ext.HeadersResponse, "response", _LENGTH)
assert _tag(ext.BodyResponse, "response", _LENGTH) == _RESPONSE
_STATUS_REPLACE: Final = _tag(ext.CommonResponse, "status", _VARINT) + _varint(
    ext.CommonResponse.CONTINUE_AND_REPLACE
)
_HEADER_MUTATION: Final = _tag(ext.CommonResponse, "header_mutation", _LENGTH)
_BODY_MUTATION: Final = _tag(ext.CommonResponse, "body_mutation", _LENGTH)
_CLEAR_ROUTE_CACHE: Final = _tag(ext.CommonResponse, "clear_route_cache", _VARINT) + b"\x01"
_BODY: Final = _tag(ext.BodyMutation, "body", _LENGTH)
_CLEAR_BODY: Final = _delimited(
    _BODY_MUTATION, _tag(ext.BodyMutation, "clear_body", _VARINT) + b"\x01"
)
_SET_HEADERS: Final = _tag(ext.HeaderMutation, "set_headers", _LENGTH)
_REMOVE_HEADERS: Final = _tag(ext.HeaderMutation, "remove_headers", _LENGTH)
_OPTION_HEADER: Final = _tag(base_pb2.HeaderValueOption, "header", _LENGTH)
_OPTION_OVERWRITE: Final = _tag(base_pb2.HeaderValueOption, "append_action", _VARINT) + _varint(
    _OVERWRITE
)
_HEADER_KEY: Final = _tag(base_pb2.HeaderValue, "key", _LENGTH)
_HEADER_RAW: Final = _tag(base_pb2.HeaderValue, "raw_value", _LENGTH)
_IMMEDIATE_STATUS: Final = _tag(ext.ImmediateResponse, "status", _LENGTH)
_HTTP_STATUS_CODE: Final = _tag(http_status_pb2.HttpStatus, "code", _VARINT)
_IMMEDIATE_HEADERS: Final = _tag(ext.ImmediateResponse, "headers", _LENGTH)
_IMMEDIATE_BODY: Final = _tag(ext.ImmediateResponse, "body", _LENGTH)
_IMMEDIATE_DETAILS: Final = _tag(ext.ImmediateResponse, "details", _LENGTH)
_FIELDS: Final = _tag(struct_pb2.Struct, "fields", _LENGTH)
# A map entry's key and value (fields 1 and 2 of every map's entry message).
_ENTRY_KEY: Final = _varint(1 << 3 | _LENGTH)
_ENTRY_VALUE: Final = _varint(2 << 3 | _LENGTH)
_NUMBER_VALUE: Final = _tag(struct_pb2.Value, "number_value", _FIXED64)
_STRING_VALUE: Final = _tag(struct_pb2.Value, "string_value", _LENGTH)
_BOOL_VALUE: Final = _tag(struct_pb2.Value, "bool_value", _VARINT)
_BOOL_VALUES: Final = {flag: _BOOL_VALUE + _varint(int(flag)) for flag in (False, True)}
_STRUCT_VALUE: Final = _tag(struct_pb2.Value, "struct_value", _LENGTH)
_NAMESPACE_PREFIX: Final = _string(_ENTRY_KEY, names.METADATA_NAMESPACE) + _ENTRY_VALUE
_double: Final = struct.Struct("<d").pack
# Each metadata key's number entry but the number's 8 bytes (the keys are the service's own
# names, a few dozen).
_CACHED_NUMBER_HEADS: Final = 256
_NUMBER_HEADS: Final[dict[str, bytes]] = {}
# Whole entries of string values (a model, a backend, a tenant: a request's are mostly those
# of the requests before it). Bounded in number and value size; emptied when full.
_CACHED_ENTRIES: Final = 1024
_CACHED_VALUE_CHARS: Final = 256
_STRING_ENTRIES: Final[dict[tuple[str, str], bytes]] = {}
_SKIP_REST: Final = _delimited(_MODE_OVERRIDE, SKIP_REST.SerializeToString())
_BODY_MODES: Final = {
    name: _delimited(_MODE_OVERRIDE, mode.SerializeToString())
    for name, mode in RESPONSE_BODY_MODES.items()
}
# The phases the service does not read (trailers, or a body it did not ask for): an empty
# answer lets each pass.
_PASSTHROUGH: Final[dict[str, bytes]] = {
    kind: ext.ProcessingResponse(**{kind: answer()}).SerializeToString()
    for kind, answer in (
        ("request_headers", ext.HeadersResponse),
        ("request_body", ext.BodyResponse),
        ("request_trailers", ext.TrailersResponse),
        ("response_headers", ext.HeadersResponse),
        ("response_body", ext.BodyResponse),
        ("response_trailers", ext.TrailersResponse),
    )
}


# A streamed chunk's reply: the message a stream carries most, so its two constant replies
# are kept, and the heads before a new body by the body's size.
_CHUNK_PASS: Final = response_body_reply(Continue())
_CHUNK_CLEAR: Final = response_body_reply(Continue(body=b""))


def chunk_reply(body: bytes | None) -> bytes:
    """The reply to a streamed response chunk that is not the last: pass it as it came
    (None) or send `body` instead; equal to response_body_reply(Continue(body=body))."""
    if body is None:
        return _CHUNK_PASS
    if not body:
        return _CHUNK_CLEAR
    size = len(body)
    head = _CHUNK_HEADS.get(size)
    if head is None:
        head = _chunk_head(size)
        if size < _CACHED_HEADS:
            _CHUNK_HEADS[size] = head
    return head + body


def _chunk_head(size: int) -> bytes:
    """The reply's bytes before a body of `size` bytes: each field's tag and length."""
    mutation = _BODY + _varint(size)
    size += len(mutation)
    common = _BODY_MUTATION + _varint(size)
    size += len(common)
    response = _RESPONSE + _varint(size)
    size += len(response)
    return b"".join((_RESPONSE_BODY, _varint(size), response, common, mutation))


# Chunk replies' heads by body size, for the sizes SSE chunks come in (at most ~100 KB).
_CACHED_HEADS: Final = 4096
_CHUNK_HEADS: Final[dict[int, bytes]] = {}


def serialise(reply: bytes) -> bytes:
    """A reply for the wire: every reply is written as bytes already."""
    return reply
