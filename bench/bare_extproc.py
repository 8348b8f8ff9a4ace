"""A bare grpc.aio ext_proc: answers the same three messages as the service, with no logic.

The benchmark's third setup: it shows how much of the service's CPU per request is the
cost of gRPC messages in Python rather than the gateway's own work.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2_grpc

# Routes every request to the benchmark's only backend, as the service would.
ROUTE = ext.HeaderMutation(
    set_headers=[
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="x-extproc-cluster", raw_value=b"backend.mock"),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
    ]
)


class Bare(ext_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    async def Process(
        self, requests: AsyncIterator[ext.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ext.ProcessingResponse]:
        async for request in requests:
            kind = request.WhichOneof("request")
            if kind == "request_headers":
                yield ext.ProcessingResponse(request_headers=ext.HeadersResponse())
            elif kind == "request_body":
                common = ext.CommonResponse(header_mutation=ROUTE, clear_route_cache=True)
                yield ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))
            else:
                yield ext.ProcessingResponse(response_headers=ext.HeadersResponse())


async def main(address: str) -> None:
    server = grpc.aio.server()
    ext_grpc.add_ExternalProcessorServicer_to_server(Bare(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_async.HealthServicer(), server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
