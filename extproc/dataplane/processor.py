"""The ext_proc servicer: one Stream per call. The transport opens it as a session, each
message answered inside the callback its frames arrive in, with no coroutine woken for it;
Process drives the same Stream as a coroutine over grpc.aio's ServicerContext subset
(read, write, abort, metadata), for the service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from extproc import transport
from extproc.dataplane import incoming
from extproc.dataplane.effects import Effects
from extproc.dataplane.stream import Stream, StreamFailed

if TYPE_CHECKING:
    import grpc


async def _abort(
    context: grpc.aio.ServicerContext | transport.Context, code: int, details: str
) -> None:
    """End the call with a gRPC status; raises, as both servers' abort does."""
    if isinstance(context, transport.Context):
        await context.abort(code, details)
    # grpc.aio (the service tests) takes its enum. Imported here: the service itself runs
    # on the transport and does not load gRPC's C core (its memory: docs/benchmarks.md).
    import grpc

    await context.abort(next(s for s in grpc.StatusCode if s.value[0] == code), details)


class Processor(Effects):
    """The effects its streams share (Effects), and a Stream for each call."""

    def open(self, context: grpc.aio.ServicerContext | transport.Context) -> Stream:
        """The handling of one ext_proc stream, message by message (the transport calls it
        from the frames' callback: no coroutine wakes up for a message answered at once)."""
        return Stream(self, context)

    async def Process(
        self,
        requests: AsyncIterator[ext.ProcessingRequest] | None,
        context: grpc.aio.ServicerContext | transport.Context,
    ) -> None:
        """The same handling as a coroutine, for grpc.aio (the service tests)."""
        stream = self.open(context)
        failed = False
        try:
            while True:
                request = await context.read()
                if not isinstance(request, ext.ProcessingRequest):  # the end, on either server
                    return
                reply = stream.message(incoming.of_message(request))
                if not isinstance(reply, bytes):
                    reply = await reply
                # grpc.aio writes messages: the reply, which is written as bytes, parsed.
                await context.write(ext.ProcessingResponse.FromString(reply))
        except StreamFailed as failure:
            failed = True
            await _abort(context, failure.code, str(failure))
        finally:
            stream.close(failed)
