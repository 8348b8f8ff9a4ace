"""Latency at a fixed request rate (open loop), and time to first token of streamed replies.

wrk measures a saturated gateway; this measures one that is not. Requests start on a fixed
schedule (RATE per second) whether or not earlier ones have finished, so a slow reply
cannot hold back the next request and hide its own delay (no coordinated omission): each
latency runs from the request's scheduled start. Every request runs on a kept-alive
connection from a pool that grows when all are busy.

For a streamed request, the time to first token is the time to the first body bytes (the
first SSE event); the latency is the time to the end of the stream.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _run(
    url: str, body: bytes, rate: float, seconds: float, extra: dict[str, str] | None
) -> dict[str, float]:
    total, first, errors = [], [], 0
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    headers = {"content-type": "application/json", **(extra or {})}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    chunk = await response.content.readany()
                    first_at = time.perf_counter()
                    while chunk:
                        chunk = await response.content.readany()
                    done_at = time.perf_counter()
                    if response.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            first.append(first_at - scheduled)
            total.append(done_at - scheduled)

        # Warm-up: connections open and the gateway's caches fill.
        await asyncio.gather(*(one(time.perf_counter()) for _ in range(20)))
        total.clear()
        first.clear()
        count = int(rate * seconds)
        start = time.perf_counter() + 0.05
        tasks = []
        for index in range(count):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    return {
        "requests": float(count),
        "errors": float(errors),
        "p50_ms": statistics.median(total) * 1e3,
        "p99_ms": percentile(total, 0.99) * 1e3,
        "first_p50_ms": statistics.median(first) * 1e3,
        "first_p99_ms": percentile(first, 0.99) * 1e3,
    }


def fixed_rate(
    url: str, body: bytes, rate: float, seconds: float, headers: dict[str, str] | None = None
) -> dict[str, float]:
    """Send `body` to `url` at `rate` requests per second for `seconds`; latencies in ms."""
    return asyncio.run(_run(url, body, rate, seconds, headers))
