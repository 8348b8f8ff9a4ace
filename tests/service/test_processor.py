"""The ext_proc service over a real gRPC channel, with real Envoy protobuf messages."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.control.stack import free_port, grpc_serving, wait_until
from extproc.dataplane.processor import Processor
from extproc.telemetry.metrics import Metrics
from tests.helpers import BASE_CONFIG, runtime, start_service


def headers_message(
    headers: dict[str, str], end_of_stream: bool = False, **kind: object
) -> ext.ProcessingRequest:
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )
    field = str(kind.get("field", "request_headers"))
    return ext.ProcessingRequest(
        **{field: ext.HttpHeaders(headers=header_map, end_of_stream=end_of_stream)}
    )


def body_message(body: bytes) -> ext.ProcessingRequest:
    return ext.ProcessingRequest(request_body=ext.HttpBody(body=body, end_of_stream=True))


def mutations(response: ext.CommonResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in response.header_mutation.set_headers}


CHAT = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    "authorization": "Bearer key-a",
    "x-request-id": "r1",
}


@pytest.fixture(scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    ext_grpc.add_ExternalProcessorServicer_to_server(Processor(runtime(), Metrics()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


async def exchange(
    channel: grpc.aio.Channel, *messages: ext.ProcessingRequest, metadata=None
) -> list[ext.ProcessingResponse]:  # type: ignore[no-untyped-def]
    stub = ext_grpc.ExternalProcessorStub(channel)
    call = stub.Process(metadata=metadata)
    replies = []
    for message in messages:
        await call.write(message)
        replies.append(await call.read())
    call.cancel()  # as Envoy does once the HTTP exchange is over
    return replies


async def test_chat_request_is_routed_in_two_messages(channel: grpc.aio.Channel) -> None:
    body = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    first, second, third = await exchange(
        channel,
        headers_message(CHAT),
        body_message(body),
        headers_message({":status": "200", "x-envoy-attempt-count": "1"}, field="response_headers"),
    )
    assert first.WhichOneof("response") == "request_headers"
    common = second.request_body.response
    assert mutations(common)["x-extproc-cluster"] == "backend.openai"
    assert mutations(common)["authorization"] == "Bearer sk-test-openai"
    assert common.clear_route_cache
    assert orjson.loads(common.body_mutation.body)["model"] == "gpt-4o-2024-08-06"
    assert mutations(common)["content-length"] == str(len(common.body_mutation.body))
    assert "x-envoy-attempt-count" in third.response_headers.response.header_mutation.remove_headers


async def test_errors_become_immediate_responses(channel: grpc.aio.Channel) -> None:
    (reply,) = await exchange(channel, headers_message({**CHAT, ":path": "/v1/unknown"}))
    immediate = reply.immediate_response
    assert immediate.status.code == 404
    assert orjson.loads(immediate.body)["error"]["code"] == "unknown_url"
    assert {h.header.key: h.header.raw_value for h in immediate.headers.set_headers} == {
        "content-type": b"application/json"
    }


async def test_fallback_route_emits_dynamic_metadata(channel: grpc.aio.Channel) -> None:
    body = orjson.dumps({"model": "resilient", "messages": [{"role": "user", "content": "hi"}]})
    _, reply = await exchange(channel, headers_message(CHAT), body_message(body))
    fields = reply.dynamic_metadata.fields["extproc"].struct_value.fields
    assert fields["model"].string_value == "resilient"
    assert fields["route"].string_value.startswith("fallback.")


async def test_upstream_attempt_stream_is_told_apart_by_metadata(channel: grpc.aio.Channel) -> None:
    cluster = next(iter(runtime().fallback_routes))
    context = struct_pb2.Struct()
    context.update({"route": cluster, "model": "resilient", "suffix": "/chat/completions"})
    message = headers_message({":path": "/v1/chat/completions", "x-envoy-attempt-count": "2"})
    message.metadata_context.filter_metadata["extproc"].CopyFrom(context)
    message.attributes["envoy.filters.http.ext_proc"].update(
        {
            "xds.upstream_host_metadata": 'filter_metadata { key: "extproc" value { fields { key: "backend" value { string_value: "second" } } } }'
        }
    )
    (reply,) = await exchange(channel, message, metadata=(("x-extproc-role", "upstream"),))
    assert mutations(reply.request_headers.response) == {
        ":path": "/v1/chat/completions",
        "x-extra": "1",
    }


async def test_phases_out_of_order_are_refused(channel: grpc.aio.Channel) -> None:
    stub = ext_grpc.ExternalProcessorStub(channel)
    for messages in (
        [body_message(b"{}")],  # a body before any headers
        [headers_message(CHAT), headers_message(CHAT)],  # headers twice
        [ext.ProcessingRequest()],  # no phase at all
    ):
        call = stub.Process()
        for message in messages:
            await call.write(message)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "out of order" in str(caught.value.details())


def _broken(*_: object) -> None:
    raise RuntimeError("a bug")


@pytest.mark.sources
async def test_unexpected_failure_is_a_grpc_error_not_a_hang(
    channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("extproc.dataplane.stream.Exchange.request_headers", _broken)
    call = ext_grpc.ExternalProcessorStub(channel).Process()
    await call.write(headers_message(CHAT))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"  # nothing of the bug leaks


def _chunk(content: str) -> bytes:
    payload = {"id": "c", "choices": [{"index": 0, "delta": {"content": content}}], "usage": None}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _streamed(chunks: list[tuple[bytes, bool]]) -> list[ext.ProcessingRequest]:
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    response = {":status": "200", "content-type": "text/event-stream"}
    return [
        headers_message(CHAT),
        body_message(orjson.dumps(body)),
        headers_message(response, field="response_headers"),
        *(
            ext.ProcessingRequest(response_body=ext.HttpBody(body=chunk, end_of_stream=end))
            for chunk, end in chunks
        ),
    ]


async def test_streamed_chunks_are_answered_and_timed() -> None:
    """The chunks of a stream (answered the short way) get the bytes the client should
    see; their timings reach the phase histogram when the stream ends."""
    metrics = Metrics()
    server = grpc.aio.server()
    ext_grpc.add_ExternalProcessorServicer_to_server(Processor(runtime(), metrics), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    chunks = [(_chunk("a"), False), (_chunk("b") + _chunk("c"), False), (b"", True)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            replies = await exchange(chan, *_streamed(chunks))
            await asyncio.sleep(0.1)
    finally:
        await server.stop(None)
    bodies = [r.response_body.response.body_mutation.body for r in replies[3:5]]
    # The gateway asked for usage the client did not: "usage": null is cut out.
    assert bodies == [chunk.replace(b',"usage":null', b"") for chunk, _ in chunks[:2]]
    assert all(b"usage" not in body for body in bodies)
    count = metrics.registry.get_sample_value(
        "extproc_phase_duration_seconds_count", {"phase": "response_body"}
    )
    assert count == 3


@pytest.mark.sources
async def test_a_failing_chunk_is_a_grpc_error(
    channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("extproc.dataplane.stream.Exchange.response_chunk", _broken)
    call = ext_grpc.ExternalProcessorStub(channel).Process()
    messages = _streamed([(_chunk("a"), False)])
    for message in messages[:-1]:
        await call.write(message)
        await call.read()
    await call.write(messages[-1])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"


async def test_a_chunk_after_the_last_is_refused(channel: grpc.aio.Channel) -> None:
    call = ext_grpc.ExternalProcessorStub(channel).Process()
    for message in _streamed([(_chunk("a"), True)]):
        await call.write(message)
        await call.read()
    await call.write(_streamed([(_chunk("b"), False)])[-1])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- the real process: health and drain -----------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "gw.yaml"
    config.write_text(
        BASE_CONFIG
        + f"\nservice: {{grpc_address: '{address}', metrics_address: 'off', shutdown_grace: 3s}}\n"
    )
    log = tmp_path / "service.log"
    process = start_service(config, address, log)
    try:
        yield process, address, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_drains_in_flight_streams_then_exits_zero(
    served: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, address, log = served
    with grpc.insecure_channel(address) as chan:
        stub = ext_grpc.ExternalProcessorStub(chan)
        watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        requests: list[ext.ProcessingRequest] = [headers_message(CHAT)]
        body = orjson.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        )

        def feed() -> Iterator[ext.ProcessingRequest]:
            yield requests[0]
            while len(requests) < 2:
                time.sleep(0.01)
            yield requests[1]

        in_flight = stub.Process(feed())
        assert next(in_flight).WhichOneof("response") == "request_headers"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # The exchange that was in flight is still served.
        requests.append(body_message(body))
        reply = next(in_flight)
        assert mutations(reply.request_body.response)["x-extproc-cluster"] == "backend.openai"
        in_flight.cancel()
        assert process.wait(timeout=10) == 0
    # It left as soon as the in-flight exchange ended, not at the end of the 3 s grace.
    assert time.monotonic() - started < 2.5
    text = log.read_text()
    assert '"event":"draining"' in text and '"abandoned_streams":0' in text


def _held_stream(
    stub: ext_grpc.ExternalProcessorStub, release: list[bool]
) -> Iterator[ext.ProcessingResponse]:
    """An exchange that stays in flight until release[0] is set."""

    def feed() -> Iterator[ext.ProcessingRequest]:
        yield headers_message(CHAT)
        while not release:
            time.sleep(0.01)

    return stub.Process(feed())  # type: ignore[no-any-return]


def test_new_streams_are_refused_while_draining(
    served: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, address, _ = served
    release: list[bool] = []
    with grpc.insecure_channel(address) as chan:
        stub = ext_grpc.ExternalProcessorStub(chan)
        held = _held_stream(stub, release)
        next(held)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.poll() is None  # still draining the held exchange
        with pytest.raises(grpc.RpcError) as caught:
            next(stub.Process(iter([headers_message(CHAT)]), timeout=2))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        release.append(True)
        held.cancel()
    assert process.wait(timeout=10) == 0


def test_grace_period_bounds_the_drain(served: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    process, address, log = served
    release: list[bool] = []
    with grpc.insecure_channel(address) as chan:
        held = _held_stream(ext_grpc.ExternalProcessorStub(chan), release)
        next(held)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        elapsed = time.monotonic() - started
        release.append(True)
    assert 2.5 < elapsed < 6  # shutdown_grace is 3s
    assert '"abandoned_streams":1' in log.read_text()


async def test_stream_metrics_go_up_and_down(channel: grpc.aio.Channel) -> None:
    await asyncio.sleep(0)
    metrics = Metrics()
    server = grpc.aio.server()
    ext_grpc.add_ExternalProcessorServicer_to_server(Processor(runtime(), metrics), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        await exchange(
            chan,
            headers_message({**CHAT, ":path": "/v1/models", ":method": "GET"}, end_of_stream=True),
        )
        await asyncio.sleep(0.1)
    await server.stop(None)
    assert metrics.active_streams._value.get() == 0
    assert metrics.requests.labels("", "", "200")._value.get() == 1


DEAD_STORE_CONFIG = """
backends: [{{name: b, url: "http://127.0.0.1:9/v1"}}]
models: [{{name: m, routes: [{{backend: b}}]}}]
accounting:
  store: {{redis: {{url: "redis://127.0.0.1:{port}/0", timeout: 200ms}}, fail_open: {fail_open}}}
tenants:
  - name: t
    budgets: [{{name: daily, window: day, max_tokens: 1000}}]
auth: {{anonymous_tenant: t}}
"""


@pytest.mark.parametrize("fail_open", [False, True])
async def test_unreachable_budget_store_follows_the_configured_failure_mode(
    fail_open: bool,
) -> None:
    from extproc.dataplane.effects import make_store

    config = runtime(DEAD_STORE_CONFIG.format(port=free_port(), fail_open=str(fail_open).lower()))
    metrics = Metrics()
    server = grpc.aio.server()
    ext_grpc.add_ExternalProcessorServicer_to_server(
        Processor(config, metrics, make_store(config)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            chat = {":method": "POST", ":path": "/v1/chat/completions", "x-request-id": "r9"}
            body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
            _, reply = await exchange(chan, headers_message(chat), body_message(body))
    finally:
        await server.stop(None)
    if fail_open:
        assert reply.HasField("request_body")
        assert mutations(reply.request_body.response)["x-extproc-cluster"] == "backend.b"
    else:
        assert reply.immediate_response.status.code == 503
        error = orjson.loads(reply.immediate_response.body)["error"]
        assert error["code"] == "budget_unavailable"
    errors = metrics.budget_store_errors.labels("reserve")._value.get()
    assert errors == 1


async def test_health_address_offers_health_and_nothing_else(tmp_path: Path) -> None:
    """Kubernetes probes reach a second port; ext_proc (whose replies carry provider keys)
    stays on the socket only."""
    socket = tmp_path / "run" / "extproc.sock"
    health = f"127.0.0.1:{free_port()}"
    config = tmp_path / "gw.yaml"
    config.write_text(
        BASE_CONFIG + f"\nservice: {{grpc_address: 'unix://{socket}', health_address: '{health}',"
        " metrics_address: 'off', shutdown_grace: 1s}\n"
    )
    process = start_service(
        config, health, tmp_path / "service.log", {"TEST_OPENAI_KEY": "sk-test"}
    )
    try:
        assert grpc_serving(f"unix://{socket}")
        with grpc.insecure_channel(health) as sync_chan:
            # grpc.aio reports INTERNAL when its send loses the race with the refusal.
            with pytest.raises(grpc.RpcError) as caught:
                stub = ext_grpc.ExternalProcessorStub(sync_chan)
                next(stub.Process(iter([headers_message(CHAT)])))
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        async with grpc.aio.insecure_channel(health) as chan:
            watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            # The next read is under way before the drain starts: an idle service drains in
            # a few milliseconds, and a message that comes with the connection's close is
            # dropped by a client that has not asked for it yet.
            reading = asyncio.ensure_future(watch.read())
            await asyncio.sleep(0)
            process.send_signal(signal.SIGTERM)
            # Probes learn of the drain on the health port too.
            assert (await reading).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_service_does_not_load_grpc_core() -> None:
    """`extproc serve` runs on h2grpc: gRPC's C core (~9 MB resident) stays unloaded. The
    processor still serves on grpc.aio (the tests above), importing it only there."""
    code = (
        "import sys\n"
        "import extproc.control.cli, extproc.control.process, extproc.control.supervisor\n"
        "print(sorted(name for name in sys.modules if name == 'grpc' or name.startswith('grpc.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_the_serving_process_imports_neither_grpc_nor_the_dev_tools(tmp_path: Path) -> None:
    """Every module a real `extproc serve` imports while it starts, answers an exchange,
    reloads its config and drains, as Python records them (-X importtime): neither gRPC's
    C core nor the dev tools (extproc.devtools, outside the service's import graph), nor the
    MCP SDK and the web stack the demo MCP server runs on."""
    socket = tmp_path / "extproc.sock"
    config = tmp_path / "gw.yaml"
    config.write_text(
        BASE_CONFIG + f"\nservice: {{grpc_address: 'unix://{socket}', metrics_address: 'off',"
        " shutdown_grace: 1s}\n"
    )
    log = tmp_path / "service.log"
    env = {"TEST_OPENAI_KEY": "sk-test", "PYTHONPROFILEIMPORTTIME": "1"}
    process = start_service(config, f"unix://{socket}", log, env)
    try:
        with grpc.insecure_channel(f"unix:{socket}") as chan:
            body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
            replies = ext_grpc.ExternalProcessorStub(chan).Process(
                iter([headers_message(CHAT), body_message(body)]), timeout=5
            )
            next(replies)
            routed = next(replies)
        assert mutations(routed.request_body.response)["x-extproc-cluster"] == "backend.openai"
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: b"config_reloaded" in log.read_bytes(), 10, "the reload")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    imported = {
        line.rpartition("|")[2].strip()
        for line in log.read_text().splitlines()
        if line.startswith("import time:")
    }
    assert {"extproc.dataplane.service", "extproc.control.reload"} <= imported
    unwanted = [
        m
        for m in imported
        if m.split(".")[0] in ("grpc", "mcp", "starlette", "uvicorn", "sse_starlette")
        or m.startswith("extproc.devtools")
    ]
    assert unwanted == []
