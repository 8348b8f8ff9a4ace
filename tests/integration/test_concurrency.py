"""More requests in flight than one connection to the service takes streams: each holds
an ext_proc stream for its whole life, Envoy opens more connections to the service as the
ext_proc cluster's maximum streams says, and every request is answered."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import orjson

from extproc.control.stack import free_port
from extproc.transport import Limits
from tests.integration.conftest import MOCK_BOTH, PORTS, start_gateway

CONFIG = (
    PORTS
    + MOCK_BOTH
    + """tenants: [{{name: anyone}}]
auth: {{anonymous_tenant: anyone}}
"""
)
REQUESTS = 1100
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


async def ask(port: int, started: asyncio.Event) -> int:
    """One request on its own connection (the mock holds it a while); its status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await started.wait()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"x-mock-delay-ms: 2000\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )
    response = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    return int(response.split(b" ", 2)[1])


async def ask_all(port: int) -> dict[int, int]:
    started = asyncio.Event()
    calls = [asyncio.ensure_future(ask(port, started)) for _ in range(REQUESTS)]
    await asyncio.sleep(1)  # every connection open before the requests go
    started.set()
    statuses: dict[int, int] = {}
    for status in await asyncio.gather(*calls):
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def test_requests_past_one_connections_streams_are_all_served(tmp_path: Path) -> None:
    admin = free_port()
    gateway = start_gateway(tmp_path, CONFIG, ports={"admin_port": admin})
    try:
        port = int(gateway.url.rsplit(":", 1)[1])
        assert asyncio.run(ask_all(port)) == {200: REQUESTS}
        stats = httpx.get(f"http://127.0.0.1:{admin}/stats?filter=^cluster\\.").text
        counters = dict(re.findall(r"^cluster\.extproc\.(\w+): (\d+)$", stats, re.MULTILINE))
        backend = dict(re.findall(r"^cluster\.backend\.openai\.(\w+): (\d+)$", stats, re.MULTILINE))
    finally:
        gateway.stack.stop()
    per_connection = Limits().max_concurrent_streams
    assert int(counters["upstream_cx_total"]) >= REQUESTS // per_connection
    assert int(counters["upstream_rq_total"]) >= REQUESTS
    for overflow in ("upstream_rq_pending_overflow", "upstream_cx_overflow", "upstream_rq_retry"):
        assert counters[overflow] == "0", overflow
        # Nor did the backend's cluster refuse any of them (its breakers take as many).
        assert backend[overflow] == "0", overflow
