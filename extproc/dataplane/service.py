"""The ext_proc service of one process: the transport's servers (ext_proc and health, and
the plaintext probe port), the processor behind them, and the drain that ends them.
Signals, reload and workers are the control plane's (control/process.py)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog
from grpc_health.v1 import health_pb2

from extproc import tokens, transport
from extproc.config.runtime import Runtime
from extproc.dataplane import envoy, incoming
from extproc.dataplane.effects import make_store
from extproc.dataplane.grpc_tls import ServerTls
from extproc.dataplane.processor import Processor
from extproc.telemetry.metrics import Metrics

log = structlog.get_logger("extproc")
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


def _bind_address(address: str) -> str:
    if address.startswith("unix://"):
        path = Path(address[len("unix://") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        # A socket file left by a previous run would make the bind fail.
        if path.is_socket():
            path.unlink()
        return f"unix:{path}"
    return address


class Service:
    """A worker (service.workers > 1) listens on its own address, leaves the probe server
    to worker 0, and writes its own capture file."""

    def __init__(self, runtime: Runtime, metrics: Metrics, *, worker: int | None = None) -> None:
        self.settings = runtime.service
        self.address = self.settings.addresses[worker or 0]
        self.worker = worker
        # A buffered request body arrives in one gRPC message.
        self.server = transport.Server(max_message=runtime.max_request_bytes + 1024 * 1024)
        # Estimates (cut streams, missing usage, reservations, prompt limits) need the
        # tokenizer; loading it lazily would block the first request that needs it.
        tokens.preload()
        self.processor = Processor(runtime, metrics, make_store(runtime), worker=worker or 0)
        self.server.add(
            f"/{SERVICE_NAME}/Process",
            transport.Method.of_session(
                self.processor.open,
                incoming.read,
                envoy.serialise,
            ),
        )
        self.health = transport.Health()
        self.health.serve_on(self.server)
        self.probes: transport.Server | None = None

    def apply(self, runtime: Runtime) -> None:
        """A reloaded config, for exchanges that start from now on."""
        self.processor.apply(runtime)

    async def start(self) -> None:
        """Listen, and say SERVING."""
        settings = self.settings
        if settings.grpc_tls is not None:
            tls = ServerTls(settings.grpc_tls)
            await self.server.listen(_bind_address(self.address), ssl=tls.context, admit=tls.admit)
        else:
            await self.server.listen(_bind_address(self.address))
        # Probes that cannot reach the socket, or present no client certificate, get a server
        # offering health and nothing else, in plaintext: it carries no secret.
        if settings.health_address and not self.worker:
            self.probes = transport.Server(limits=transport.PROBES)
            self.health.serve_on(self.probes)
            await self.probes.listen(settings.health_address)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """Drain within the configured grace period, then close every server."""
        processor = self.processor
        grace = self.settings.shutdown_grace
        log.info("draining", grace_seconds=grace, active_streams=processor.active)
        # Health watchers (Kubernetes, Envoy) learn first; then no new streams are accepted.
        self.health.shutting_down()
        # The server's own grace is a backstop: the loop below ends the drain at the deadline.
        stopping = asyncio.ensure_future(self.server.stop(grace + 1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(processor.idle.wait(), grace)
        # In-flight exchanges are done (or out of time); their settlements finish writing.
        await processor.drain(max(grace, 1.0))
        await processor.store.close()
        await processor.tools.close()
        # End what is left, such as health watches.
        abandoned = processor.active
        await self.server.stop(0)
        await stopping
        if self.probes is not None:
            await self.probes.stop(0)
        log.info("stopped", abandoned_streams=abandoned)
