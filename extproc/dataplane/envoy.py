"""Conversions between Envoy's ext_proc protobuf messages and the service's plain decisions."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import struct_pb2, text_format

from extproc import names
from extproc.dataplane.decisions import Continue, Decision, Reply

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_Mode = processing_mode_pb2.ProcessingMode
# Full modes: a mode_override replaces the filter's processing mode for the stream.
SKIP_REST = _Mode(
    request_header_mode=_Mode.SEND,
    request_body_mode=_Mode.NONE,
    request_trailer_mode=_Mode.SKIP,
    response_header_mode=_Mode.SKIP,
    response_body_mode=_Mode.NONE,
    response_trailer_mode=_Mode.SKIP,
)
# The response-headers reply turns on the response body only where a policy must read it
# (as full modes, by the reader's mode: "buffered" or "streamed").
RESPONSE_BODY_MODES = {
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
_ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"


def headers_of(http_headers: ext.HttpHeaders) -> dict[str, str]:
    """Header map as a dict of lower-case names; a repeated header keeps its last value.

    Read from the map's bytes (upb writes them in one call): the Python objects would be
    one per header, each field looked up by name. A map with a field this reading does
    not know (upb keeps unknown fields) is read through the objects."""
    found = _header_map(http_headers.headers.SerializeToString())
    return found if found is not None else _headers_of_objects(http_headers)


def _headers_of_objects(http_headers: ext.HttpHeaders) -> dict[str, str]:
    result: dict[str, str] = {}
    for header in http_headers.headers.headers:
        result[header.key] = (
            header.raw_value.decode("latin-1") if header.raw_value else header.value
        )
    return result


def _header_map(data: bytes) -> dict[str, str] | None:
    """A serialised HeaderMap's headers, or None at anything but its known fields (each
    length-delimited): upb wrote the bytes from a message it parsed, so they are whole and
    their strings UTF-8."""
    result: dict[str, str] = {}
    at, end = 0, len(data)
    while at < end:
        if data[at] != _HEADERS_TAG:
            return None
        size, at = _read_varint(data, at + 1)
        stop = at + size
        key = value = ""
        raw = b""
        while at < stop:
            tag = data[at]
            if tag != _KEY_TAG and tag != _VALUE_TAG and tag != _RAW_VALUE_TAG:
                return None
            size, at = _read_varint(data, at + 1)
            if tag == _KEY_TAG:
                key = data[at : at + size].decode()
            elif tag == _VALUE_TAG:
                value = data[at : at + size].decode()
            else:
                raw = data[at : at + size]
            at += size
        result[key] = raw.decode("latin-1") if raw else value
    return result


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at `at`, and where the next field starts."""
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def path_of(http_headers: ext.HttpHeaders) -> str:
    """The request's :path, read without building the whole header map."""
    for header in http_headers.headers.headers:
        if header.key == ":path":
            return str(header.raw_value.decode("latin-1") if header.raw_value else header.value)
    return ""


def host_backend(request: ext.ProcessingRequest) -> str | None:
    """The backend named in the chosen upstream host's metadata (upstream filter only)."""
    attributes = request.attributes.get(_ATTRIBUTES_KEY)
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


def exchange_metadata(request: ext.ProcessingRequest) -> dict[str, str]:
    """The dynamic metadata the downstream exchange left in the service's namespace."""
    fields = request.metadata_context.filter_metadata.get(names.METADATA_NAMESPACE)
    if fields is None:
        return {}
    return {key: value.string_value for key, value in fields.fields.items()}


def _fill_metadata(metadata: struct_pb2.Struct, values: dict[str, str | int | float]) -> None:
    # Field by field: Struct.update's generic conversion cost ~3x as much per reply.
    fields = metadata.fields[names.METADATA_NAMESPACE].struct_value.fields
    for key, value in values.items():
        if isinstance(value, str):
            fields[key].string_value = value
        elif isinstance(value, bool):
            fields[key].bool_value = value
        else:
            fields[key].number_value = value


# Replies are filled in place: building sub-messages and copying them into their parent
# cost about twice as much per reply.
def _fill_mutation(
    mutation: ext.HeaderMutation, set_headers: list[tuple[str, str]], remove_headers: list[str]
) -> None:
    add = mutation.set_headers.add
    for name, value in set_headers:
        option = add()
        option.header.key = name
        option.header.raw_value = value.encode("latin-1")
        option.append_action = _OVERWRITE
    if remove_headers:
        mutation.remove_headers.extend(remove_headers)


def _fill(common: ext.CommonResponse, decision: Continue) -> None:
    common.SetInParent()  # the reply names its phase even when it changes nothing
    if decision.replace_body:
        common.status = ext.CommonResponse.CONTINUE_AND_REPLACE
    if decision.clear_route_cache:
        common.clear_route_cache = True
    if decision.set_headers or decision.remove_headers:
        _fill_mutation(common.header_mutation, decision.set_headers, decision.remove_headers)
    if decision.body is not None:
        if decision.body:
            common.body_mutation.body = decision.body
        else:
            common.body_mutation.clear_body = True


def immediate(reply: Reply) -> ext.ProcessingResponse:
    response = ext.ProcessingResponse()
    answer = response.immediate_response
    answer.SetInParent()
    answer.status.code = reply.status
    _fill_mutation(answer.headers, reply.headers, [])
    answer.body = reply.body
    answer.details = f"extproc_{reply.status}"
    return response


def request_headers_reply(decision: Decision) -> ext.ProcessingResponse:
    if isinstance(decision, Reply):
        return immediate(decision)
    response = ext.ProcessingResponse()
    _fill(response.request_headers.response, decision)
    if decision.skip_request_body:
        response.mode_override.CopyFrom(SKIP_REST)
    return response


def request_body_reply(decision: Decision) -> ext.ProcessingResponse:
    if isinstance(decision, Reply):
        return immediate(decision)
    response = ext.ProcessingResponse()
    _fill(response.request_body.response, decision)
    if decision.metadata:
        _fill_metadata(response.dynamic_metadata, decision.metadata)
    return response


def response_headers_reply(decision: Continue) -> ext.ProcessingResponse:
    response = ext.ProcessingResponse()
    _fill(response.response_headers.response, decision)
    if decision.response_body is not None:
        response.mode_override.CopyFrom(RESPONSE_BODY_MODES[decision.response_body])
    return response


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_BYTE = [bytes((value,)) for value in range(0x80)]


def _field_number(message: type, name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number  # type: ignore[attr-defined, no-any-return]


# The header map's wire format: HeaderMap.headers, then HeaderValue's three strings, each
# a one-byte tag of a length-delimited field.
_HEADERS_TAG = _field_number(base_pb2.HeaderMap, "headers") << 3 | 2
_KEY_TAG = _field_number(base_pb2.HeaderValue, "key") << 3 | 2
_VALUE_TAG = _field_number(base_pb2.HeaderValue, "value") << 3 | 2
_RAW_VALUE_TAG = _field_number(base_pb2.HeaderValue, "raw_value") << 3 | 2


# A streamed chunk's reply, serialised here: it is the message a stream carries most
# often, and building it as protobuf objects was a tenth of a chunk's cost
# (docs/decisions/hand-built-chunk-replies.md).
_CHUNK_PASS: bytes = ext.ProcessingResponse(
    response_body=ext.BodyResponse(response=ext.CommonResponse())
).SerializeToString()
_CHUNK_CLEAR: bytes = ext.ProcessingResponse(
    response_body=ext.BodyResponse(
        response=ext.CommonResponse(body_mutation=ext.BodyMutation(clear_body=True))
    )
).SerializeToString()
# The length-delimited fields' tags from ProcessingResponse down to BodyMutation.body.
_TAGS = [
    _varint(_field_number(message, name) << 3 | 2)
    for message, name in (
        (ext.ProcessingResponse, "response_body"),
        (ext.BodyResponse, "response"),
        (ext.CommonResponse, "body_mutation"),
        (ext.BodyMutation, "body"),
    )
]


def chunk_reply(body: bytes | None) -> bytes:
    """The serialised reply to a streamed response chunk that is not the last: pass it as
    it came (None) or send `body` instead; equal to response_body_reply(Continue(body=body))
    serialised."""
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
    mutation = _TAGS[3] + _varint(size)
    size += len(mutation)
    common = _TAGS[2] + _varint(size)
    size += len(common)
    response = _TAGS[1] + _varint(size)
    size += len(response)
    return b"".join((_TAGS[0], _varint(size), response, common, mutation))


# Chunk replies' heads by body size, for the sizes SSE chunks come in (at most ~100 KB).
_CACHED_HEADS = 4096
_CHUNK_HEADS: dict[int, bytes] = {}


def serialise(reply: ext.ProcessingResponse | bytes) -> bytes:
    """A reply for the wire; chunk replies come serialised already."""
    return reply if type(reply) is bytes else reply.SerializeToString()  # type: ignore[union-attr]


def response_body_reply(decision: Continue) -> ext.ProcessingResponse:
    response = ext.ProcessingResponse()
    _fill(response.response_body.response, decision)
    if decision.metadata:
        _fill_metadata(response.dynamic_metadata, decision.metadata)
    return response
