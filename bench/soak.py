"""`make soak`: minutes of mixed traffic through Envoy + the service, then a reconciliation.

Traffic (16 concurrent clients, a fixed random seed): OpenAI JSON and streams, Anthropic
JSON and streams, OpenAI requests translated to an Anthropic backend, provider 503s,
malformed bodies, unknown models, and clients that leave a stream after its first event.
Every tenant request is charged against a budget held in a real redis-server.

Reported: requests served and their rate, outcomes by kind, the service's and Envoy's
resident memory over time (growth after warm-up), and whether the books balance:
  - every request the clients made has exactly one exchange record (none lost, none twice),
    with the status the client saw;
  - the usage records of the answers served in full add up to what the mock provider
    says it served (answers, prompt and completion tokens);
  - the budget counter in Redis equals the usage recorded (estimates of the streams that
    clients left included): nothing charged twice, nothing left reserved.
Exits non-zero when the books do not balance. Figures are printed, not asserted.

Environment: SOAK_SECONDS (default 180), SOAK_CLIENTS (default 16), SOAK_WORKERS (default 1:
service.workers; with more, the service's memory is the proportional set size of all its
processes, since RSS would count the pages they share once per process).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import memory_mb, tree  # noqa: E402
from extproc.control.stack import Stack, free_port, wait_until  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "180"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "16"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "1"))
SAMPLE_EVERY = 5.0
PREFIX = "soak:"

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
  - {{name: claude-soak, routes: [{{backend: anthropic}}]}}
prices: {{models: [{{models: ["*"], input: 0.15, output: 0.6}}]}}
accounting:
  store: {{redis: {{url: "redis://127.0.0.1:{redis_port}/0", key_prefix: "{prefix}"}}}}
tenants:
  - name: soak
    budgets: [{{name: generous, window: day, max_tokens: 100000000000}}]
auth: {{anonymous_tenant: soak}}
"""

KINDS = {
    # kind: weight
    "openai_json": 30,
    "openai_stream": 20,
    "anthropic_json": 6,
    "anthropic_stream": 6,
    "translated": 10,
    "provider_503": 5,
    "bad_json": 5,
    "unknown_model": 5,
    "leave_stream": 13,
}
EXPECTED_STATUS = {
    "provider_503": 503,
    "bad_json": 400,
    "unknown_model": 404,
}
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


@dataclass
class Outcome:
    kind: str
    request_id: str
    status: int
    complete: bool  # the client read the whole answer


def prompt(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 120)))


async def one(client: httpx.AsyncClient, kind: str, rng: random.Random) -> Outcome:
    text = prompt(rng)
    headers = {"x-mock-tag": "leave" if kind == "leave_stream" else "keep"}
    messages = [{"role": "user", "content": text}]
    path = "/v1/chat/completions"
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": messages}
    stream = kind in ("openai_stream", "anthropic_stream", "leave_stream")
    if kind.startswith("anthropic"):
        path = "/v1/messages"
        body = {"model": "claude-soak", "max_tokens": 400, "messages": messages}
    elif kind == "translated":
        body["model"] = "claude-soak"
    elif kind == "provider_503":
        headers["x-mock-status"] = "503"
    elif kind == "unknown_model":
        body["model"] = "no-such-model"
    elif kind == "leave_stream":
        headers["x-mock-chunk-delay-ms"] = "20"
    if stream:
        body["stream"] = True
    content = (
        b'{"model": "gpt-4o-mini", "messages": [' if kind == "bad_json" else orjson.dumps(body)
    )
    async with client.stream("POST", path, content=content, headers=headers) as response:
        request_id = response.headers.get("x-request-id", "")
        if kind == "leave_stream":
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break  # one event: leave
            return Outcome(kind, request_id, response.status_code, False)
        await response.aread()
        return Outcome(kind, request_id, response.status_code, True)


async def clients(
    url: str, deadline: float, outcomes: list[Outcome], failures: collections.Counter[str]
) -> None:
    kinds, weights = list(KINDS), list(KINDS.values())

    async def worker(number: int) -> None:
        rng = random.Random(number)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            while time.monotonic() < deadline:
                kind = rng.choices(kinds, weights)[0]
                try:
                    outcomes.append(await one(client, kind, rng))
                except httpx.HTTPError as error:
                    failures[f"{kind}: {type(error).__name__}"] += 1

    await asyncio.gather(*(worker(n) for n in range(CLIENTS)))


def rss_mb(pid: int) -> float:
    return memory_mb(pid)[0]


def service_mb(pid: int) -> float:
    """RSS of the service; with workers, the PSS of the supervisor and its workers."""
    if WORKERS == 1:
        return rss_mb(pid)
    return sum(memory_mb(process)[1] for process in tree(pid))


async def sample(stack: Stack, deadline: float, samples: list[tuple[float, float, float]]) -> None:
    started = time.monotonic()
    service, envoy = stack.processes["service"].pid, stack.processes["envoy"].pid
    while True:
        samples.append((time.monotonic() - started, service_mb(service), rss_mb(envoy)))
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(SAMPLE_EVERY)


def records(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"event":"exchange"' in line:
            found.append(orjson.loads(line))
    return found


def redis_tokens(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return sum(int(client.hget(key, "t") or 0) for key in client.scan_iter(f"{PREFIX}*"))
    finally:
        client.close()


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make soak installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return bool(redis.Redis(port=port).ping())
        except redis.RedisError:
            return False

    wait_until(up, 10, "redis-server", process)
    return process, port


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="extproc-soak-") as temp:
        workdir = Path(temp)
        redis_process, redis_port = start_redis(workdir)
        ports = {
            name: free_port()
            for name in ("port", "admin_port", "grpc_port", "metrics_port", "mock_port")
        }
        config = workdir / "soak.yaml"
        text = textwrap.dedent(CONFIG).format(**ports, redis_port=redis_port, prefix=PREFIX)
        if WORKERS > 1:  # a socket each: the ports after grpc_port may be taken
            text = text.replace(
                f'grpc_address: "127.0.0.1:{ports["grpc_port"]}"',
                f'grpc_address: "unix://{workdir}/sock/extproc.sock"\n  workers: {WORKERS}',
            )
        config.write_text(text)
        stack = Stack(config_path=config, workdir=workdir, mock_port=ports["mock_port"])
        stack.start()
        try:
            return run(stack, ports, redis_port, workdir)
        finally:
            stack.stop()
            redis_process.terminate()
            redis_process.wait(10)


def run(stack: Stack, ports: dict[str, int], redis_port: int, workdir: Path) -> int:
    url = f"http://127.0.0.1:{ports['port']}"
    outcomes: list[Outcome] = []
    failures: collections.Counter[str] = collections.Counter()
    samples: list[tuple[float, float, float]] = []
    print(f"soak: {SECONDS} s, {CLIENTS} clients, mix {KINDS}", flush=True)
    started = time.monotonic()
    deadline = started + SECONDS

    async def both() -> None:
        await asyncio.gather(
            clients(url, deadline, outcomes, failures), sample(stack, deadline, samples)
        )

    asyncio.run(both())
    elapsed = time.monotonic() - started
    time.sleep(3)  # the last records, settlements and access log lines
    served = httpx.get(f"http://127.0.0.1:{ports['mock_port']}/mock/stats", timeout=5).json()
    found = records(workdir / "service.log")
    return report(outcomes, failures, samples, elapsed, found, served, redis_tokens(redis_port))


def report(
    outcomes: list[Outcome],
    failures: collections.Counter[str],
    samples: list[tuple[float, float, float]],
    elapsed: float,
    found: list[dict[str, Any]],
    served: dict[str, list[int]],
    charged: int,
) -> int:
    problems: list[str] = []
    print(f"\nrequests: {len(outcomes)} in {elapsed:.0f} s ({len(outcomes) / elapsed:.0f}/s)")
    by_kind: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for outcome in outcomes:
        by_kind[outcome.kind][outcome.status] += 1
    print("\n| kind | requests | statuses |\n|---|---|---|")
    for kind in KINDS:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(by_kind[kind].items()))
        print(f"| {kind} | {sum(by_kind[kind].values())} | {statuses} |")
        wrong = {s: n for s, n in by_kind[kind].items() if s != EXPECTED_STATUS.get(kind, 200)}
        if wrong:
            problems.append(f"{kind}: unexpected statuses {wrong}")
    if failures:
        problems.append(f"client-side failures: {dict(failures)}")

    memory = "RSS" if WORKERS == 1 else f"PSS ({WORKERS} workers + supervisor)"
    print(f"\n| time s | service {memory} MB | Envoy RSS MB |\n|---|---|---|")
    for at, service, envoy in samples:
        print(f"| {at:.0f} | {service:.1f} | {envoy:.1f} |")
    warm = next((s for s in samples if s[0] >= min(30.0, elapsed / 4)), samples[0])
    last = samples[-1]
    print(
        f"\nservice {memory}: {warm[1]:.1f} MB after warm-up ({warm[0]:.0f} s), "
        f"{last[1]:.1f} MB at the end: {last[1] - warm[1]:+.1f} MB; "
        f"Envoy {warm[2]:.1f} -> {last[2]:.1f} MB"
    )

    # Every request the clients made: exactly one record, with the status they saw.
    counts = collections.Counter(r["request_id"] for r in found)
    by_id = {r["request_id"]: r for r in found}
    lost = [o for o in outcomes if o.request_id not in counts]
    twice = [rid for rid, n in counts.items() if n > 1]
    mismatched = [
        o for o in outcomes if o.request_id in by_id and by_id[o.request_id]["status"] != o.status
    ]
    print(
        f"\nrecords: {len(found)} for {len(outcomes)} requests; lost {len(lost)}, "
        f"recorded twice {len(twice)}, status differs {len(mismatched)}"
    )
    if lost or twice or mismatched:
        problems.append(
            f"records: lost {len(lost)}, twice {len(twice)}, mismatched {len(mismatched)}"
        )

    # The answers served in full: records vs the provider's own count.
    kept = [
        by_id[o.request_id]
        for o in outcomes
        if o.kind not in EXPECTED_STATUS and o.kind != "leave_stream" and o.request_id in by_id
    ]
    recorded = [
        len(kept),
        sum(r["usage"]["input_tokens"] for r in kept),
        sum(r["usage"]["output_tokens"] for r in kept),
    ]
    provider = served.get("keep", [0, 0, 0])
    print(f"answers in full: recorded {recorded} vs provider served {provider} [answers, in, out]")
    if recorded != provider:
        problems.append(f"usage of full answers: recorded {recorded}, served {provider}")
    estimated = [
        by_id[o.request_id] for o in outcomes if o.kind == "leave_stream" and o.request_id in by_id
    ]
    partial = sum(1 for r in estimated if not r["usage"].get("complete", True))
    print(f"streams left early: {len(estimated)} recorded, {partial} with estimated partial usage")

    # The budget: charged exactly what was recorded.
    total = sum(
        r.get("usage", {}).get("total_tokens", 0) for r in found if r.get("tenant") == "soak"
    )
    print(f"budget: Redis counter {charged} tokens, records {total} tokens")
    if charged != total:
        problems.append(f"budget counter {charged} != recorded usage {total}")

    print("\nbooks balance" if not problems else "\nPROBLEMS:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
