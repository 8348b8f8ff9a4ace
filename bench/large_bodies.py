"""`make bench-large`: the memory a request body at the default limit costs Envoy and the service.

A gateway with the default `limits.max_request_bytes` and the mock provider; requests of
three base64 images (~10 MB each, ~30 MB of JSON), one at a time and then N at once, as
sent (the service parses the body and lets it pass) and translated for an Anthropic
backend (the service also writes a new body). Each run on a fresh gateway: the peak
resident memory of the service and of Envoy above their idle size (VmHWM, reset through
/proc/PID/clear_refs after a warm-up request), their resident size a second after the
answers, and their CPU per request.

Environment: LARGE_CONCURRENCY (requests at once, default "1 2 4"), LARGE_IMAGES (default
3), LARGE_IMAGE_BYTES (base64 characters per image, default 10,000,000), LARGE_ENV
("NAME=value ..." for the gateway's processes, e.g. MALLOC_MMAP_THRESHOLD_=1048576).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import cpu_seconds, machine  # noqa: E402
from extproc.config.loader import DEFAULT_MAX_REQUEST_BYTES  # noqa: E402
from extproc.control.stack import Stack, free_port  # noqa: E402

CONCURRENCY = [int(n) for n in os.environ.get("LARGE_CONCURRENCY", "1 2 4").split()]
IMAGES = int(os.environ.get("LARGE_IMAGES", "3"))
IMAGE_BYTES = int(os.environ.get("LARGE_IMAGE_BYTES", "10000000"))

CONFIG = """
listener: {{port: {port}}}
admin: {{port: {admin_port}}}
service:
  grpc_address: "127.0.0.1:{grpc_port}"
  metrics_address: "127.0.0.1:{metrics_port}"
backends:
  - {{name: openai, url: "http://127.0.0.1:{mock_port}/v1"}}
  - {{name: anthropic, schema: anthropic, url: "http://127.0.0.1:{mock_port}/v1"}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}]}}
  - {{name: gpt-on-claude, routes: [{{backend: anthropic, upstream_model: claude-x}}]}}
tenants: [{{name: bench}}]
auth: {{anonymous_tenant: bench}}
"""


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """VmHWM starts again from the current resident size (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def body(model: str) -> bytes:
    images = [
        {
            "type": "image_url",
            "image_url": {
                "url": "data:image/png;base64,"
                + base64.b64encode(os.urandom(IMAGE_BYTES * 3 // 4)).decode()
            },
        }
        for _ in range(IMAGES)
    ]
    content = [{"type": "text", "text": "What is in these pictures?"}, *images]
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": content}]})


async def send(url: str, payload: bytes, count: int, delay_ms: int = 0) -> list[int]:
    headers = {"content-type": "application/json", "x-mock-delay-ms": str(delay_ms)}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        replies = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", content=payload, headers=headers)
                for _ in range(count)
            )
        )
    return [reply.status_code for reply in replies]


async def held(url: str, payload: bytes, count: int, pids: dict[str, int]) -> dict[str, int]:
    """The resident size of each process while `count` requests wait for a provider that
    answers after 4 s (their bodies read and forwarded, the answers not yet come)."""
    waiting = asyncio.ensure_future(send(url, payload, count, delay_ms=4000))
    await asyncio.sleep(3)
    sizes = {name: kib(pid, "VmRSS") for name, pid in pids.items()}
    await waiting
    return sizes


def measure(label: str, model: str, count: int) -> None:
    """One fresh gateway: its idle size, then `count` requests at once."""
    ports = {
        name: free_port()
        for name in ("port", "admin_port", "grpc_port", "metrics_port", "mock_port")
    }
    with tempfile.TemporaryDirectory(prefix="bench-large-") as directory:
        workdir = Path(directory)
        (workdir / "gateway.yaml").write_text(textwrap.dedent(CONFIG).format(**ports))
        stack = Stack(
            config_path=workdir / "gateway.yaml",
            workdir=workdir,
            mock_port=ports["mock_port"],
            env=dict(item.split("=", 1) for item in os.environ.get("LARGE_ENV", "").split()),
        )
        stack.start()
        try:
            pids = {
                "service": stack.processes["service"].pid,
                "envoy": stack.processes["envoy"].pid,
            }
            url = f"http://127.0.0.1:{ports['port']}"
            # A small request first: what a process allocates for its first request is not
            # the body's cost.
            asyncio.run(send(url, _small(), 1))
            payload = body(model)
            time.sleep(0.5)
            idle = {name: kib(pid, "VmRSS") for name, pid in pids.items()}
            for pid in pids.values():
                reset_peak(pid)
            cpu = {n: cpu_seconds(p) for n, p in pids.items()}
            started = time.monotonic()
            statuses = asyncio.run(send(url, payload, count))
            took = time.monotonic() - started
            cpu = {n: (cpu_seconds(p) - cpu[n]) / count for n, p in pids.items()}
            time.sleep(1)
            peaks = {n: kib(p, "VmHWM") - idle[n] for n, p in pids.items()}
            after = {n: kib(p, "VmRSS") - idle[n] for n, p in pids.items()}
            waiting = asyncio.run(held(url, payload, count, pids))
            waiting = {n: v - idle[n] - after[n] for n, v in waiting.items()}
        finally:
            stack.stop()
    print(
        f"{label}, {count} x {len(payload) / 1e6:.1f} MB at once ({statuses}, {took:.1f} s): "
        "idle "
        + ", ".join(f"{n} {v / 1024:.0f} MB" for n, v in idle.items())
        + "; peak above idle "
        + ", ".join(f"{n} {v / 1024:.0f} MB" for n, v in peaks.items())
        + "; 1 s later "
        + ", ".join(f"{n} {v / 1024:+.0f} MB" for n, v in after.items())
        + "; held while the provider thinks "
        + ", ".join(f"{n} {v / 1024:+.0f} MB" for n, v in waiting.items())
        + "; CPU per request "
        + ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in cpu.items())
    )


def main() -> None:
    print(f"{dt.date.today()}, {machine()}; limit {DEFAULT_MAX_REQUEST_BYTES:,} bytes")
    for model, label in (("gpt-4o-mini", "as sent"), ("gpt-on-claude", "translated")):
        for count in CONCURRENCY:
            measure(label, model, count)


def _small() -> bytes:
    return orjson.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}]}
    )


if __name__ == "__main__":
    main()
