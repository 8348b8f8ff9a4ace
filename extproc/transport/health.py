"""grpc.health.v1 on the transport: Check, and Watch for those who follow changes."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2

from extproc.transport.calls import EOF, NOT_FOUND, Context, Method, RpcError
from extproc.transport.server import Server


class Health:
    """The statuses of named services (the empty name: the server as a whole)."""

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.changed = asyncio.Event()

    def set(self, service: str, status: int) -> None:
        self.statuses[service] = status
        self._notify()

    def shutting_down(self) -> None:
        for service in self.statuses:
            self.statuses[service] = health_pb2.HealthCheckResponse.NOT_SERVING
        self._notify()

    def _notify(self) -> None:
        """Wake every Watch; the next change gets a fresh event."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def check(self, request: health_pb2.HealthCheckRequest) -> Any:
        status = self.statuses.get(request.service)
        if status is None:
            raise RpcError(NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def watch(self, context: Context) -> None:
        request = await context.read()
        service = "" if request is EOF else request.service
        sent = None
        while True:
            status = self.statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            await self.changed.wait()

    def serve_on(self, server: Server) -> None:
        parse = health_pb2.HealthCheckRequest.FromString
        serialise = health_pb2.HealthCheckResponse.SerializeToString
        server.add("/grpc.health.v1.Health/Check", Method(False, self.check, parse, serialise))
        server.add("/grpc.health.v1.Health/Watch", Method(True, self.watch, parse, serialise))
