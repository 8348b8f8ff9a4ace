"""A bare ext_proc on h2grpc, the service's own transport: the same three answers as
bare_extproc.py with no logic (and an SSE response's chunks relayed unchanged), so the
benchmark shows what the transport alone costs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvloop
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from grpc_health.v1 import health_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_extproc import ROUTE  # type: ignore[import-not-found]

from extproc import transport
from extproc.dataplane.envoy import RESPONSE_BODY_MODES

# An SSE response's body is relayed through the ext_proc, one message per chunk, as the
# service asks for it (the same mode_override).
STREAMED = RESPONSE_BODY_MODES["streamed"]
PASS_CHUNK = ext.ProcessingResponse(response_body=ext.BodyResponse(response=ext.CommonResponse()))


class Bare:
    """The answers, as a session: each message answered as its frame arrives (the way the
    service's ext_proc streams run on h2grpc). An SSE response's chunks come through and
    pass unchanged: the transport's own cost per streamed event."""

    def message(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse:
        kind = request.WhichOneof("request")
        if kind == "response_body":
            return PASS_CHUNK
        if kind == "request_headers":
            return ext.ProcessingResponse(request_headers=ext.HeadersResponse())
        if kind == "request_body":
            common = ext.CommonResponse(header_mutation=ROUTE, clear_route_cache=True)
            return ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))
        reply = ext.ProcessingResponse(response_headers=ext.HeadersResponse())
        for header in request.response_headers.headers.headers:
            if header.key == "content-type" and header.raw_value.startswith(b"text/event-stream"):
                reply.mode_override.CopyFrom(STREAMED)
        return reply

    def close(self, failed: bool) -> None:
        pass


async def main(address: str) -> None:
    server = transport.Server()
    server.add(
        "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
        transport.Method.of_session(
            lambda context: Bare(),
            ext.ProcessingRequest.FromString,
            ext.ProcessingResponse.SerializeToString,
        ),
    )
    health = transport.Health()
    health.serve_on(server)
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.listen(address)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))  # the service's loop
