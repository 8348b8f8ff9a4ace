"""Envoy's ext_proc requests, read from their bytes: the phase, and that phase's headers,
body and end of stream.

Parsing a ProcessingRequest with protobuf copies it into upb's arena, and each field read
then makes a Python object (a request body's bytes twice over); a header map is one object
per header. The downstream filter's messages hold a handful of known fields, so the
service reads them from the bytes the transport received (a body is copied once, out of
the message). Anything else is read through protobuf: a field the reading does not know
(metadata and attributes, which only the per-attempt processor's messages carry, trailers,
a field a later Envoy adds), a field repeated where protobuf would merge, a malformed
message. So the reading
from bytes accepts no message protobuf would refuse, and gives what protobuf's objects
give (tests compare the two on messages of every shape and on their corruptions).
"""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import text_format

from extproc import names


def _tag(message: type, name: str, wire_type: int) -> int:
    """A field's tag (its number << 3 | its wire type), one byte for every field read."""
    field = message.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]
    tag: int = field.number << 3 | wire_type
    assert tag < 0x80
    return tag


_VARINT: Final = 0
_LENGTH: Final = 2
_REQUEST_HEADERS: Final = _tag(ext.ProcessingRequest, "request_headers", _LENGTH)
_RESPONSE_HEADERS: Final = _tag(ext.ProcessingRequest, "response_headers", _LENGTH)
_REQUEST_BODY: Final = _tag(ext.ProcessingRequest, "request_body", _LENGTH)
_RESPONSE_BODY: Final = _tag(ext.ProcessingRequest, "response_body", _LENGTH)
_OBSERVABILITY_MODE: Final = _tag(ext.ProcessingRequest, "observability_mode", _VARINT)
# Enums and a bool: nothing the service reads.
_PROTOCOL_CONFIG: Final = _tag(ext.ProcessingRequest, "protocol_config", _LENGTH)
# Envoy sends it with every message, empty where no namespace is forwarded.
_METADATA_CONTEXT: Final = _tag(ext.ProcessingRequest, "metadata_context", _LENGTH)
_HEADERS_MAP: Final = _tag(ext.HttpHeaders, "headers", _LENGTH)
_HEADERS_END: Final = _tag(ext.HttpHeaders, "end_of_stream", _VARINT)
_BODY_BYTES: Final = _tag(ext.HttpBody, "body", _LENGTH)
_BODY_END: Final = _tag(ext.HttpBody, "end_of_stream", _VARINT)
_BODY_END_WITHOUT_MESSAGE: Final = _tag(ext.HttpBody, "end_of_stream_without_message", _VARINT)
_BODY_COMPRESSED: Final = _tag(ext.HttpBody, "grpc_message_compressed", _VARINT)
_MAP_HEADER: Final = _tag(base_pb2.HeaderMap, "headers", _LENGTH)
_KEY: Final = _tag(base_pb2.HeaderValue, "key", _LENGTH)
_VALUE: Final = _tag(base_pb2.HeaderValue, "value", _LENGTH)
_RAW_VALUE: Final = _tag(base_pb2.HeaderValue, "raw_value", _LENGTH)

_HEADER_KINDS: Final = ("request_headers", "response_headers")
_BODY_KINDS: Final = ("request_body", "response_body")
_ATTRIBUTES_KEY: Final = "envoy.filters.http.ext_proc"


class Incoming:
    """One ProcessingRequest as a stream reads it. `kind` is the phase (the `request`
    oneof's field name; None for a message without one). `headers` are a headers phase's,
    lower-case, a repeated header keeping its last value; `body` and `end_of_stream` are
    the phase's (trailers end their direction). `message` is protobuf's parse, where the
    message was read through it."""

    __slots__ = ("body", "end_of_stream", "headers", "kind", "message")

    def __init__(
        self,
        kind: str | None,
        headers: dict[str, str],
        body: bytes,
        end_of_stream: bool,
        message: ext.ProcessingRequest | None,
    ) -> None:
        self.kind = kind
        self.headers = headers
        self.body = body
        self.end_of_stream = end_of_stream
        self.message = message


class _Unread(Exception):
    """The bytes hold something the reading leaves to protobuf."""


def read(data: bytes) -> Incoming:
    """A serialised ProcessingRequest; raises protobuf's DecodeError where it does not parse."""
    try:
        return _read(data)
    except (_Unread, UnicodeDecodeError):
        pass
    return of_message(ext.ProcessingRequest.FromString(data))


def of_message(message: ext.ProcessingRequest) -> Incoming:
    """The same reading of a message protobuf parsed."""
    kind = message.WhichOneof("request")
    if kind == "request_headers" or kind == "response_headers":
        headers = getattr(message, kind)
        return Incoming(kind, _headers_of_objects(headers), b"", headers.end_of_stream, message)
    if kind == "request_body" or kind == "response_body":
        body = getattr(message, kind)
        return Incoming(kind, {}, body.body, body.end_of_stream, message)
    return Incoming(kind, {}, b"", kind is not None, message)


def _headers_of_objects(http_headers: ext.HttpHeaders) -> dict[str, str]:
    result: dict[str, str] = {}
    for header in http_headers.headers.headers:
        result[header.key] = (
            header.raw_value.decode("latin-1") if header.raw_value else header.value
        )
    return result


def _read(data: bytes) -> Incoming:
    kind: str | None = None
    headers: dict[str, str] = {}
    body_start = body_end = 0
    end_of_stream = False
    at, end = 0, len(data)
    while at < end:
        tag = data[at]
        if tag == _OBSERVABILITY_MODE:
            at = _varint(data, at + 1, end)[1]
            continue
        size, at = _varint(data, at + 1, end)
        stop = at + size
        if stop > end:
            raise _Unread
        if tag == _PROTOCOL_CONFIG:
            _well_formed(data, at, stop)
        elif tag == _METADATA_CONTEXT and size == 0:
            pass
        elif kind is not None:
            # A second phase: protobuf keeps the last one, or merges a repeated one.
            raise _Unread
        elif tag in (_REQUEST_HEADERS, _RESPONSE_HEADERS):
            kind = _HEADER_KINDS[tag == _RESPONSE_HEADERS]
            headers, end_of_stream = _http_headers(data, at, stop)
        elif tag in (_REQUEST_BODY, _RESPONSE_BODY):
            kind = _BODY_KINDS[tag == _RESPONSE_BODY]
            body_start, body_end, end_of_stream = _http_body(data, at, stop)
        else:
            raise _Unread
        at = stop
    return Incoming(kind, headers, data[body_start:body_end], end_of_stream, None)


def _http_headers(data: bytes, at: int, stop: int) -> tuple[dict[str, str], bool]:
    headers: dict[str, str] | None = None
    end_of_stream = False
    while at < stop:
        tag = data[at]
        if tag == _HEADERS_END:
            value, at = _varint(data, at + 1, stop)
            end_of_stream = value != 0
        elif tag == _HEADERS_MAP and headers is None:
            size, at = _varint(data, at + 1, stop)
            headers = _header_map(data, at, _within(at, size, stop))
            at += size
        else:
            raise _Unread
    return ({} if headers is None else headers), end_of_stream


def _header_map(data: bytes, at: int, stop: int) -> dict[str, str]:
    result: dict[str, str] = {}
    while at < stop:
        if data[at] != _MAP_HEADER:
            raise _Unread
        size, at = _varint(data, at + 1, stop)
        header_stop = _within(at, size, stop)
        key = value = ""
        raw = b""
        while at < header_stop:
            tag = data[at]
            if tag != _KEY and tag != _VALUE and tag != _RAW_VALUE:
                raise _Unread
            size, at = _varint(data, at + 1, header_stop)
            field_stop = _within(at, size, header_stop)
            # Strict UTF-8, as protobuf checks a string field (UnicodeDecodeError: its turn).
            if tag == _KEY:
                key = data[at:field_stop].decode()
            elif tag == _VALUE:
                value = data[at:field_stop].decode()
            else:
                raw = data[at:field_stop]
            at = field_stop
        result[key] = raw.decode("latin-1") if raw else value
    return result


def _http_body(data: bytes, at: int, stop: int) -> tuple[int, int, bool]:
    """Where the body is in `data` (copied out once the whole message is read: a message
    left to protobuf then costs no copy of it here), and its end of stream."""
    start = end = 0
    end_of_stream = False
    while at < stop:
        tag = data[at]
        if tag == _BODY_BYTES:
            size, start = _varint(data, at + 1, stop)
            at = end = _within(start, size, stop)
        elif tag == _BODY_END:
            value, at = _varint(data, at + 1, stop)
            end_of_stream = value != 0
        elif tag in (_BODY_END_WITHOUT_MESSAGE, _BODY_COMPRESSED):
            at = _varint(data, at + 1, stop)[1]
        else:
            raise _Unread
    return start, end, end_of_stream


def _well_formed(data: bytes, at: int, stop: int) -> None:
    """A message the service does not read: its fields must parse (protobuf would refuse the
    whole request otherwise)."""
    while at < stop:
        tag, at = _varint(data, at, stop)
        wire_type = tag & 7
        if tag >> 3 == 0 or tag >> 3 >= 1 << 29:
            raise _Unread
        if wire_type == 0:
            at = _varint(data, at, stop)[1]
        elif wire_type == 1:
            at = _within(at, 8, stop)
        elif wire_type == 2:
            size, at = _varint(data, at, stop)
            at = _within(at, size, stop)
        elif wire_type == 5:
            at = _within(at, 4, stop)
        else:
            raise _Unread


def _within(at: int, size: int, stop: int) -> int:
    if at + size > stop:
        raise _Unread
    return at + size


def _varint(data: bytes, at: int, stop: int) -> tuple[int, int]:
    """The varint at `at` (at most ten bytes, inside `stop`), and where the next field
    starts."""
    value = shift = 0
    while at < stop:
        byte = data[at]
        at += 1
        if byte < 0x80:
            if shift == 63 and byte > 1:
                raise _Unread  # past 64 bits: protobuf's own reading decides
            return value | byte << shift, at
        if shift == 63:
            raise _Unread
        value |= (byte & 0x7F) << shift
        shift += 7
    raise _Unread


def host_backend(request: Incoming) -> str | None:
    """The backend named in the chosen upstream host's metadata (upstream filter only)."""
    message = request.message
    if message is None:
        return None
    attributes = message.attributes.get(_ATTRIBUTES_KEY)
    if attributes is None:
        return None
    value = attributes.fields.get(names.HOST_METADATA_ATTRIBUTE)
    if value is None or not value.string_value:
        return None
    metadata = base_pb2.Metadata()
    try:
        text_format.Parse(value.string_value, metadata)
    except text_format.ParseError:
        return None
    fields = metadata.filter_metadata.get(names.METADATA_NAMESPACE)
    if fields is None or "backend" not in fields.fields:
        return None
    return fields.fields["backend"].string_value or None


def exchange_metadata(request: Incoming) -> dict[str, str]:
    """The dynamic metadata the downstream exchange left in the service's namespace."""
    message = request.message
    if message is None:
        return {}
    fields = message.metadata_context.filter_metadata.get(names.METADATA_NAMESPACE)
    if fields is None:
        return {}
    return {key: value.string_value for key, value in fields.fields.items()}
