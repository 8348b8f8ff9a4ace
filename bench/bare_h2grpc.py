"""A bare ext_proc on h2grpc, the service's own transport: the same three answers as
bare_extproc.py with no logic, so the benchmark shows what the transport alone costs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from grpc_health.v1 import health_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_extproc import ROUTE  # type: ignore[import-not-found]

from extproc import h2grpc


class Bare:
    """The answers, as a session: each message answered as its frame arrives (the way the
    service's ext_proc streams run on h2grpc)."""

    def message(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse:
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            return ext.ProcessingResponse(request_headers=ext.HeadersResponse())
        if kind == "request_body":
            common = ext.CommonResponse(header_mutation=ROUTE, clear_route_cache=True)
            return ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))
        return ext.ProcessingResponse(response_headers=ext.HeadersResponse())

    def close(self, failed: bool) -> None:
        pass


async def main(address: str) -> None:
    server = h2grpc.Server()
    server.add(
        "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
        h2grpc.Method.of_session(
            lambda context: Bare(),
            ext.ProcessingRequest.FromString,
            ext.ProcessingResponse.SerializeToString,
        ),
    )
    health = h2grpc.Health()
    health.serve_on(server)
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.listen(address)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
