"""Requests read from their bytes agree with protobuf's parse: on messages of every shape
Envoy sends, on fields left to protobuf, and on corrupted bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import struct_pb2, text_format
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc import names
from extproc.dataplane import incoming

_Mode = processing_mode_pb2.ProcessingMode
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
_HEADERS = st.lists(st.tuples(_TEXT, _TEXT, st.binary(max_size=300)), max_size=12)
_BODY = st.one_of(st.binary(max_size=300), st.sampled_from([b"x" * 127, b"y" * 16384]))


def _reading(read: incoming.Incoming) -> tuple[object, ...]:
    return read.kind, read.headers, read.body, read.end_of_stream


def _through_protobuf(data: bytes) -> tuple[object, ...]:
    return _reading(incoming.of_message(ext.ProcessingRequest.FromString(data)))


def _agrees_with_protobuf(data: bytes) -> None:
    """Read as protobuf reads it, or refused with protobuf's error."""
    try:
        expected = _through_protobuf(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            incoming.read(data)
        return
    assert _reading(incoming.read(data)) == expected


@st.composite
def _requests(draw: st.DrawFn) -> ext.ProcessingRequest:
    """The messages a downstream ext_proc filter sends: one phase, headers (`value`,
    `raw_value`, both or neither, keys repeated) or a body, and the fields the service does
    not read."""
    kind = draw(
        st.sampled_from(["request_headers", "response_headers", "request_body", "response_body"])
    )
    end = draw(st.booleans())
    if kind.endswith("headers"):
        header_map = base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key=key, value=value, raw_value=raw)
                for key, value, raw in draw(_HEADERS)
            ]
        )
        phase = ext.HttpHeaders(headers=header_map, end_of_stream=end)
    else:
        phase = ext.HttpBody(
            body=draw(_BODY),
            end_of_stream=end,
            end_of_stream_without_message=draw(st.booleans()),
            grpc_message_compressed=draw(st.booleans()),
        )
    message = ext.ProcessingRequest(**{kind: phase}, observability_mode=draw(st.booleans()))
    if draw(st.booleans()):
        message.metadata_context.SetInParent()  # empty, as Envoy sends it
    if draw(st.booleans()):
        modes = st.sampled_from(
            [_Mode.NONE, _Mode.STREAMED, _Mode.BUFFERED, _Mode.FULL_DUPLEX_STREAMED]
        )
        message.protocol_config.request_body_mode = draw(modes)
        message.protocol_config.response_body_mode = draw(modes)
        message.protocol_config.send_body_without_waiting_for_header_response = draw(st.booleans())
    return message


@settings(max_examples=400, deadline=None)
@given(_requests())
def test_a_downstream_message_is_read_from_its_bytes_as_protobuf_reads_it(
    message: ext.ProcessingRequest,
) -> None:
    data = message.SerializeToString()
    read = incoming._read(data)  # not left to protobuf
    assert read.message is None
    assert _reading(read) == _through_protobuf(data)
    assert _reading(incoming.read(data)) == _reading(read)


_ENVOY_MESSAGES: Final = [
    bytes.fromhex(line)
    for line in (Path(__file__).parent.parent / "data" / "envoy_messages.hex")
    .read_text()
    .splitlines()
    if not line.startswith("#")
]


def test_envoys_own_messages_are_read_from_their_bytes() -> None:
    """Messages a real Envoy sent: the downstream filter's five are read from their bytes,
    the per-attempt filter's two (metadata and attributes) through protobuf."""
    assert len(_ENVOY_MESSAGES) == 7
    for data in _ENVOY_MESSAGES[:5]:
        assert _reading(incoming._read(data)) == _through_protobuf(data)
    for data in _ENVOY_MESSAGES[5:]:
        with pytest.raises(incoming._Unread):
            incoming._read(data)
        read = incoming.read(data)
        assert read.message is not None
        assert _reading(read) == _through_protobuf(data)


def test_the_reading_of_each_phase() -> None:
    headers = ext.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key=":path", raw_value=b"/v1/chat/completions?x=1"),
                base_pb2.HeaderValue(key="x-a", value="1"),
                base_pb2.HeaderValue(key="x-a", raw_value=b"\xe9"),  # the last one, latin-1
            ]
        )
    )
    read = incoming.read(ext.ProcessingRequest(request_headers=headers).SerializeToString())
    assert _reading(read) == (
        "request_headers",
        {":path": "/v1/chat/completions?x=1", "x-a": "\xe9"},
        b"",
        False,
    )
    body = ext.HttpBody(body=b"{}", end_of_stream=True)
    read = incoming.read(ext.ProcessingRequest(response_body=body).SerializeToString())
    assert _reading(read) == ("response_body", {}, b"{}", True)
    assert _reading(incoming.read(b"")) == (None, {}, b"", False)


_METADATA = base_pb2.Metadata(
    filter_metadata={
        names.METADATA_NAMESPACE: struct_pb2.Struct(
            fields={"route": struct_pb2.Value(string_value="chat")}
        )
    }
)
_HOST = text_format.MessageToString(
    base_pb2.Metadata(
        filter_metadata={
            names.METADATA_NAMESPACE: struct_pb2.Struct(
                fields={"backend": struct_pb2.Value(string_value="b")}
            )
        }
    ),
    as_one_line=True,
)
_ATTRIBUTES = {
    "envoy.filters.http.ext_proc": struct_pb2.Struct(
        fields={names.HOST_METADATA_ATTRIBUTE: struct_pb2.Value(string_value=_HOST)}
    )
}


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field, its length under 128."""
    return bytes((tag, len(payload))) + payload


_HEADERS_PHASE = ext.HttpHeaders(
    headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":path", value="/")])
)


@pytest.mark.parametrize(
    "data",
    [
        # The per-attempt processor's messages.
        ext.ProcessingRequest(
            request_headers=_HEADERS_PHASE, metadata_context=_METADATA, attributes=_ATTRIBUTES
        ).SerializeToString(),
        ext.ProcessingRequest(
            request_body=ext.HttpBody(body=b"{}"), metadata_context=_METADATA
        ).SerializeToString(),
        ext.ProcessingRequest(request_trailers=ext.HttpTrailers()).SerializeToString(),
        ext.ProcessingRequest(
            response_trailers=ext.HttpTrailers(trailers=_HEADERS_PHASE.headers)
        ).SerializeToString(),
        # The deprecated per-phase attributes.
        ext.ProcessingRequest(
            request_headers=ext.HttpHeaders(attributes=_ATTRIBUTES)
        ).SerializeToString(),
        # Fields the reading does not know, in the request (a one-byte and a longer tag)
        # and in a phase.
        _field(0x22, _field(0x0A, b"x")) + b"\x08\x01",
        _field(0x12, _HEADERS_PHASE.SerializeToString()) + b"\xa0\x06\x01",
        _field(0x22, _field(0x0A, b"x") + b"\x38\x01"),
        # A phase twice: protobuf merges the same phase, and keeps the last of two.
        _field(0x22, _field(0x0A, b"x")) + _field(0x22, b"\x10\x01"),
        _field(0x22, _field(0x0A, b"x")) + _field(0x2A, b"\x10\x01"),
        # A header map twice (protobuf merges them).
        _field(
            0x12,
            _field(0x0A, _field(0x0A, _field(0x0A, b"a")))
            + _field(0x0A, _field(0x0A, _field(0x0A, b"b"))),
        ),
        # A header's value twice: the last one.
        _field(
            0x12,
            _field(
                0x0A, _field(0x0A, _field(0x0A, b"a") + _field(0x12, b"b") + _field(0x12, b"c"))
            ),
        ),
        # A header's field one byte past its header, inside the map.
        _field(0x12, _field(0x0A, b"\x0a\x03\x0a\x02ab")),
        # Varints at and past ten bytes.
        _field(0x2A, b"\x10" + b"\x80" * 9 + b"\x01"),
        _field(0x2A, b"\x10" + b"\x80" * 9 + b"\x02"),
        _field(0x2A, b"\x10" + b"\x80" * 10 + b"\x01"),
    ],
)
def test_what_the_bytes_reading_leaves_is_read_through_protobuf(data: bytes) -> None:
    _agrees_with_protobuf(data)


def test_the_attempts_fields_are_read_through_protobuf() -> None:
    data = ext.ProcessingRequest(
        request_headers=_HEADERS_PHASE, metadata_context=_METADATA, attributes=_ATTRIBUTES
    ).SerializeToString()
    read = incoming.read(data)
    assert read.message is not None
    assert read.headers == {":path": "/"}
    assert incoming.exchange_metadata(read) == {"route": "chat"}
    assert incoming.host_backend(read) == "b"
    plain = incoming.read(ext.ProcessingRequest(request_headers=_HEADERS_PHASE).SerializeToString())
    assert plain.message is None
    assert incoming.exchange_metadata(plain) == {}
    assert incoming.host_backend(plain) is None


@st.composite
def _corrupted(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(_requests()).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["set", "cut", "insert"]))
        at = draw(st.integers(0, len(data)))
        if edit == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(_corrupted())
def test_corrupted_bytes_are_refused_or_read_as_protobuf_reads_them(data: bytes) -> None:
    """A tag, length or varint changed, cut or added anywhere: what the bytes reading takes
    protobuf takes, read the same; what protobuf refuses, the reading refuses with its
    error."""
    _agrees_with_protobuf(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x12",  # a tag without its length
        b"\x12\x05\x0a\x01",  # a length past the end
        b"\x12\x04\x0a\x02\x0a\x05",  # a header's length past its map's
        b"\x12\x05\x0a\x03\x0a\x01\xff",  # a key that is not UTF-8
        b"\x2a\x02\x10\x80",  # a varint cut by its message's end
        b"\x12\x03\x0a\x01\x0a",  # a header's tag at the message's end
    ],
)
def test_a_malformed_message_gets_protobufs_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        ext.ProcessingRequest.FromString(data)
    with pytest.raises(DecodeError):
        incoming.read(data)


@pytest.mark.parametrize("size", [127, 128, 255, 256, 16384])
def test_lengths_of_one_and_more_bytes(size: int) -> None:
    """A length's first byte is 0x80 at 128 and 256: a varint of two bytes, not 128."""
    header = base_pb2.HeaderValue(key="x-" + "k" * size, raw_value=b"v" * size)
    data = ext.ProcessingRequest(
        request_headers=ext.HttpHeaders(headers=base_pb2.HeaderMap(headers=[header]))
    ).SerializeToString()
    read = incoming._read(data)
    assert read.headers == {"x-" + "k" * size: "v" * size}
    assert _reading(read) == _through_protobuf(data)
