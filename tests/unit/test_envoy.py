"""Replies serialised without protobuf objects equal the protobuf-built ones."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.dataplane import envoy
from extproc.dataplane.decisions import Continue


@pytest.mark.parametrize(
    "body", [None, b"", b"x", b"y" * 127, b"y" * 128, b"z" * 16383, b"z" * 16384, b"w" * 2**21]
)
def test_chunk_reply_is_the_serialised_body_reply(body: bytes | None) -> None:
    built = envoy.response_body_reply(Continue(body=body))
    assert envoy.chunk_reply(body) == built.SerializeToString()
    # Again: a size seen before takes its head from the cache.
    assert ext.ProcessingResponse.FromString(envoy.chunk_reply(body)) == built


def test_serialise_passes_serialised_replies_through() -> None:
    reply = envoy.response_body_reply(Continue(body=b"data: 1\n\n"))
    assert envoy.serialise(reply) == reply.SerializeToString()
    assert envoy.serialise(envoy.chunk_reply(None)) == envoy.chunk_reply(None)


_HEADER_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_HEADER_TEXT, _HEADER_TEXT, st.binary(max_size=300)), max_size=12))
def test_headers_read_from_bytes_are_the_headers_read_through_objects(
    headers: list[tuple[str, str, bytes]],
) -> None:
    """Keys and values of any length (a varint of several bytes), `value`, `raw_value`,
    both or neither, repeated keys."""
    message = ext.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key=key, value=value, raw_value=raw)
                for key, value, raw in headers
            ]
        )
    )
    assert envoy._header_map(message.headers.SerializeToString()) is not None
    assert envoy.headers_of(message) == envoy._headers_of_objects(message)


@pytest.mark.parametrize("unknown", [b"\x20\x07", b"\x29" + b"\xff" * 8, b"\xa2\x06\x01x"])
def test_a_header_with_an_unknown_field_is_read_through_objects(unknown: bytes) -> None:
    """upb keeps a field it does not know when it parses, and writes it back: the bytes'
    reading gives up on it, and the objects' reading gives the same headers."""
    known = base_pb2.HeaderValue(key="x-a", raw_value=b"1").SerializeToString()
    value = base_pb2.HeaderValue.FromString(known + unknown)
    headers = ext.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":path", value="/"), value])
    )
    assert envoy._header_map(headers.headers.SerializeToString()) is None
    assert envoy.headers_of(headers) == {":path": "/", "x-a": "1"}
