"""The ext_proc stream fuzzed against a running `extproc serve`: phases out of order,
repeated or missing, end_of_stream anywhere, bodies split oddly or not JSON, thousands of
headers, bytes that are not UTF-8. Every stream ends promptly with replies or a gRPC
error, and the service keeps serving everyone else."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.control.stack import free_port, grpc_serving
from tests.helpers import BASE_CONFIG, start_service
from tests.service.test_processor import CHAT, body_message, headers_message, mutations

POLICY = """
policies:
  - name: guard
    pii: [{detector: email, action: redact}]
    restore_redacted: true
"""


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    workdir = tmp_path_factory.mktemp("fuzz")
    address = f"127.0.0.1:{free_port()}"
    config = workdir / "gw.yaml"
    text = BASE_CONFIG.replace("  - name: public\n", "  - name: public\n    policies: [guard]\n")
    config.write_text(
        text + POLICY + f"\nservice: {{grpc_address: '{address}', metrics_address: 'off'}}\n"
    )
    process = start_service(config, address, workdir / "service.log")
    yield process, address
    process.terminate()
    process.wait(10)


_paths = st.sampled_from(
    [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/m",
        "/",
        "/x" * 500,
    ]
)
_raw = st.one_of(
    st.binary(max_size=40), st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"", b"Bearer key-a"])
)
_header = st.tuples(
    st.sampled_from(
        [
            ":path",
            ":method",
            ":status",
            "authorization",
            "x-api-key",
            "content-type",
            "content-length",
            "anthropic-version",
            "x-forwarded-client-cert",
            "accept-encoding",
            "x-request-id",
            "cache-control",
            "x-extproc-cluster",
        ]
    )
    | st.text("abcxyz-", min_size=1, max_size=12),
    _raw,
)
_chat = orjson.dumps(
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi a@x.io"}]}
)
_bodies = st.one_of(
    st.binary(max_size=200),
    st.just(_chat),
    st.integers(1, len(_chat) - 1).map(lambda n: _chat[:n]),
    st.just(b'data: {"choices":[{"delta":{"content":"[EMAIL_1]"}}]}\n\n'),
    st.just(b"data: [DONE]\n\n"),
    st.just(b'{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1}}'),
)


def _headers(
    kind: str, pairs: list[tuple[str, bytes]], flood: int, end: bool
) -> ext.ProcessingRequest:
    values = [base_pb2.HeaderValue(key=k, raw_value=v) for k, v in pairs]
    values += [base_pb2.HeaderValue(key=f"x-flood-{i}", raw_value=b"v" * 20) for i in range(flood)]
    return ext.ProcessingRequest(
        **{kind: ext.HttpHeaders(headers=base_pb2.HeaderMap(headers=values), end_of_stream=end)}
    )


def _body(kind: str, body: bytes, end: bool) -> ext.ProcessingRequest:
    return ext.ProcessingRequest(**{kind: ext.HttpBody(body=body, end_of_stream=end)})


_messages = st.one_of(
    st.builds(
        lambda path, method, pairs, flood, end: _headers(
            "request_headers", [(":path", path.encode()), (":method", method), *pairs], flood, end
        ),
        _paths,
        st.sampled_from([b"POST", b"GET", b"\xff"]),
        st.lists(_header, max_size=6),
        st.sampled_from([0, 0, 0, 3000]),
        st.booleans(),
    ),
    st.builds(_body, st.just("request_body"), _bodies, st.booleans()),
    st.builds(
        lambda status, kind, end: _headers(
            "response_headers", [(":status", status), ("content-type", kind)], 0, end
        ),
        st.sampled_from([b"200", b"429", b"503", b"abc"]),
        st.sampled_from([b"application/json", b"text/event-stream", b"\xff"]),
        st.booleans(),
    ),
    st.builds(_body, st.just("response_body"), _bodies, st.booleans()),
    st.just(ext.ProcessingRequest(request_trailers=ext.HttpTrailers())),
    st.just(ext.ProcessingRequest(response_trailers=ext.HttpTrailers())),
    st.just(ext.ProcessingRequest()),  # no phase at all
)
# Starting with request headers most of the time gets the fuzz past the first check.
_streams = st.one_of(
    st.lists(_messages, min_size=1, max_size=8),
    st.tuples(
        _messages.filter(lambda m: m.HasField("request_headers")), st.lists(_messages, max_size=7)
    ).map(lambda pair: [pair[0], *pair[1]]),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(_streams)
def test_any_stream_ends_promptly_and_well_formed(
    service: tuple[subprocess.Popen[bytes], str], messages: list[ext.ProcessingRequest]
) -> None:
    process, address = service
    with grpc.insecure_channel(address) as channel:
        replies = ext_grpc.ExternalProcessorStub(channel).Process(iter(messages), timeout=5)
        try:
            for reply in replies:
                assert reply.WhichOneof("response") is not None
                if reply.HasField("immediate_response"):
                    status = reply.immediate_response.status.code
                    assert 200 <= status < 600  # a local answer: models, an error
                    orjson.loads(reply.immediate_response.body)
        except grpc.RpcError as error:
            # A clear refusal of a stream Envoy would never send, not a failure of the
            # service (INTERNAL), a hang (DEADLINE_EXCEEDED) or a dead service (UNAVAILABLE).
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert process.poll() is None


def test_after_the_fuzz_the_service_serves_normally(
    service: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, address = service
    assert process.poll() is None and grpc_serving(address)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    with grpc.insecure_channel(address) as channel:
        replies = list(
            ext_grpc.ExternalProcessorStub(channel).Process(
                iter([headers_message(CHAT), body_message(body)]), timeout=5
            )
        )
    assert mutations(replies[1].request_body.response)["x-extproc-cluster"] == "backend.openai"
