"""A transport Server in a process of its own (on uvloop, as the service), for the tests
that measure what a peer can make it hold: `python -m tests.service.h2_served PORT
[NAME=VALUE ...]` with Limits fields as NAME=VALUE. Methods: test.Echo/Chat (echoes every
message), test.Echo/Hold (reads one message, then holds the call open without reading),
test.Echo/Tally (a session that echoes), and grpc.health.v1."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from typing import Any

import uvloop
from grpc_health.v1 import health_pb2

from extproc import transport


async def chat(context: transport.Context) -> None:
    while (message := await context.read()) is not transport.EOF:
        await context.write(message)


async def hold(context: transport.Context) -> None:
    await context.read()
    await asyncio.Event().wait()


class Tally:
    def message(self, message: bytes) -> bytes:
        return message

    def close(self, failed: bool) -> None:
        pass


def tally(context: transport.Context) -> Any:
    return Tally()


def limits(arguments: list[str]) -> transport.Limits:
    fields = {field.name: field.type for field in dataclasses.fields(transport.Limits)}
    values: dict[str, Any] = {}
    for argument in arguments:
        name, _, value = argument.partition("=")
        values[name] = float(value) if fields[name] == "float" else int(value)
    return transport.Limits(**values)


async def main(port: int, arguments: list[str]) -> None:
    server = transport.Server(limits=limits(arguments))
    server.add("/test.Echo/Chat", transport.Method(True, chat, bytes, bytes))
    server.add("/test.Echo/Hold", transport.Method(True, hold, bytes, bytes))
    server.add("/test.Echo/Tally", transport.Method.of_session(tally, bytes, bytes))
    health = transport.Health()
    health.serve_on(server)
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.listen(f"127.0.0.1:{port}")
    print("serving", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2:]))
