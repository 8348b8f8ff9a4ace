"""Replies serialised without protobuf objects equal the protobuf-built ones."""

from __future__ import annotations

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

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
