"""Replies written as bytes agree with protobuf's objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc import names
from extproc.dataplane import envoy
from extproc.dataplane.decisions import Continue, Decision, Reply

# The replies as protobuf objects: what envoy.py writes as bytes, built the way the
# protobuf API builds it.


def _built_mutation(
    mutation: ext.HeaderMutation, set_headers: list[tuple[str, str]], remove: list[str]
) -> None:
    for name, value in set_headers:
        mutation.set_headers.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, raw_value=value.encode("latin-1")),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    if remove:
        mutation.remove_headers.extend(remove)


def _built(phase: str, decision: Decision) -> ext.ProcessingResponse:
    response = ext.ProcessingResponse()
    if isinstance(decision, Reply):
        answer = response.immediate_response
        answer.status.code = decision.status
        _built_mutation(answer.headers, decision.headers, [])
        answer.body = decision.body
        answer.details = f"extproc_{decision.status}"
        return response
    common = getattr(response, phase).response
    common.SetInParent()
    if decision.replace_body:
        common.status = ext.CommonResponse.CONTINUE_AND_REPLACE
    if decision.clear_route_cache:
        common.clear_route_cache = True
    if decision.set_headers or decision.remove_headers:
        _built_mutation(common.header_mutation, decision.set_headers, decision.remove_headers)
    if decision.body is not None:
        if decision.body:
            common.body_mutation.body = decision.body
        else:
            common.body_mutation.clear_body = True
    if phase == "request_headers" and decision.skip_request_body:
        response.mode_override.CopyFrom(envoy.SKIP_REST)
    if phase == "response_headers" and decision.response_body is not None:
        response.mode_override.CopyFrom(envoy.RESPONSE_BODY_MODES[decision.response_body])
    if phase in ("request_body", "response_body") and decision.metadata:
        fields = response.dynamic_metadata.fields[names.METADATA_NAMESPACE].struct_value.fields
        for key, value in decision.metadata.items():
            if isinstance(value, str):
                fields[key].string_value = value
            elif isinstance(value, bool):
                fields[key].bool_value = value
            else:
                fields[key].number_value = value
    return response


_REPLIES: dict[str, Callable[[Any], bytes]] = {
    "request_headers": envoy.request_headers_reply,
    "request_body": envoy.request_body_reply,
    "response_headers": envoy.response_headers_reply,
    "response_body": envoy.response_body_reply,
}
_TEXT = st.text(max_size=40)
_LATIN_1 = st.text(st.characters(max_codepoint=0xFF), max_size=40)
_BODIES = st.none() | st.binary(max_size=40) | st.builds(lambda n: b"b" * n, st.integers(0, 70_000))
_CONTINUES = st.builds(
    Continue,
    set_headers=st.lists(st.tuples(_TEXT, _LATIN_1), max_size=4),
    remove_headers=st.lists(_TEXT, max_size=3),
    body=_BODIES,
    clear_route_cache=st.booleans(),
    skip_request_body=st.booleans(),
    metadata=st.none()
    | st.dictionaries(
        _TEXT,
        _TEXT | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False),
        max_size=14,
    ),
    response_body=st.sampled_from([None, "buffered", "streamed"]),
    replace_body=st.booleans(),
)
_IMMEDIATES = st.builds(
    Reply,
    status=st.integers(100, 599),
    body=st.binary(max_size=300),
    headers=st.lists(st.tuples(_TEXT, _LATIN_1), max_size=4),
)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(_REPLIES)), _CONTINUES | _IMMEDIATES)
def test_replies_written_as_bytes_are_the_replies_built_as_objects(
    phase: str, decision: Decision
) -> None:
    """Each phase's reply to any decision: header changes, a new body or none or an
    empty one (a length past one varint byte), metadata of every kind, mode changes, an
    immediate answer; parsed back, the bytes are the message the protobuf API builds."""
    if isinstance(decision, Reply) and phase.startswith("response"):
        return  # a response is never answered by the service itself
    written = _REPLIES[phase](decision)
    assert ext.ProcessingResponse.FromString(written) == _built(phase, decision)
    assert envoy.is_immediate(written) == isinstance(decision, Reply)
    # Written again, its metadata's string entries come from those kept for reuse.
    assert _REPLIES[phase](decision) == written


def test_metadata_entries_kept_for_reuse_are_bounded() -> None:
    envoy._STRING_ENTRIES.clear()
    long_value = "m" * (envoy._CACHED_VALUE_CHARS + 1)
    for index in range(3 * envoy._CACHED_ENTRIES):
        decision = Continue(metadata={"model": f"model-{index}", "backend": long_value})
        written = envoy.request_body_reply(decision)
        assert ext.ProcessingResponse.FromString(written) == _built("request_body", decision)
        assert 0 < len(envoy._STRING_ENTRIES) <= envoy._CACHED_ENTRIES
    assert ("model", f"model-{index}") in envoy._STRING_ENTRIES
    assert not any(value == long_value for _, value in envoy._STRING_ENTRIES)


@pytest.mark.parametrize(
    "kind",
    [
        "request_headers",
        "request_body",
        "request_trailers",
        "response_headers",
        "response_body",
        "response_trailers",
    ],
)
def test_a_passing_phase_is_answered_with_its_empty_answer(kind: str) -> None:
    reply = ext.ProcessingResponse.FromString(envoy.passthrough(kind))
    assert reply.WhichOneof("response") == kind
    assert reply.ByteSize() == 2  # the phase's field, empty
    assert not envoy.is_immediate(envoy.passthrough(kind))


@pytest.mark.parametrize(
    "body", [None, b"", b"x", b"y" * 127, b"y" * 128, b"z" * 16383, b"z" * 16384, b"w" * 2**21]
)
def test_chunk_reply_is_the_body_reply(body: bytes | None) -> None:
    written = envoy.response_body_reply(Continue(body=body))
    assert envoy.chunk_reply(body) == written
    # Again: a size seen before takes its head from the cache.
    assert envoy.chunk_reply(body) == written
    assert ext.ProcessingResponse.FromString(written) == _built(
        "response_body", Continue(body=body)
    )
