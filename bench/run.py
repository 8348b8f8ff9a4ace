"""`make bench`: Envoy alone vs Envoy + the ext_proc service, same mock provider, same machine.

Three setups: Envoy alone; Envoy + a bare grpc.aio ext_proc that answers the same three
messages with no logic (the cost of gRPC in Python); Envoy + the service. For each body
size: a warm-up, then wrk with a fixed number of connections for a fixed time. Every
Envoy runs with --concurrency 1 (one worker thread), so the setups get the same
parallelism. CPU per request is read from /proc for Envoy, the ext_proc server and the
mock. Figures are printed, not asserted: timings are not tests.

Environment: BENCH_SECONDS (default 10), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (16).
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from extproc.stack import Stack, envoy_binary, free_port, wait_until  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
SIZES = (1024, 16 * 1024)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

CONFIG = """
listener: {{port: {port}}}
admin: {{port: {admin_port}}}
service: {{grpc_address: "127.0.0.1:{grpc_port}", metrics_address: "127.0.0.1:{metrics_port}"}}
backends: [{{name: mock, url: "http://127.0.0.1:{mock_port}/v1"}}]
models: [{{name: gpt-4o-mini, routes: [{{backend: mock}}]}}]
tenants: [{{name: bench}}]
auth: {{anonymous_tenant: bench}}
"""


def chat_body(size: int) -> bytes:
    """A chat request of about `size` bytes: a system prompt and a user message."""
    skeleton = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": ""},
        ],
        "temperature": 0.2,
    }
    filler = size - len(json.dumps(skeleton))
    words = ("lorem ipsum dolor sit amet " * (filler // 27 + 1))[: max(filler, 1)]
    skeleton["messages"][1]["content"] = words  # type: ignore[index]
    return json.dumps(skeleton).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _duration_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _field(pattern: str, out: str) -> str:
    match = re.search(pattern, out, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
    return match.group(1)


def wrk(url: str, body_file: Path, seconds: int) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    script.write_text(
        textwrap.dedent(
            f"""
            wrk.method = "POST"
            wrk.headers["Content-Type"] = "application/json"
            local f = io.open("{body_file}", "rb")
            wrk.body = f:read("*a")
            f:close()
            """
        )
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(_field(r"(\d+) requests in", out))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "rps": float(_field(r"Requests/sec:\s+([\d.]+)", out)),
        "p50_ms": _duration_ms(_field(r"^\s+50%\s+(\S+)$", out)),
        "p99_ms": _duration_ms(_field(r"^\s+99%\s+(\S+)$", out)),
        "errors": int(errors.group(1)) if errors else 0,
    }


def measure(
    stack: Stack, mock: subprocess.Popen[bytes], url: str, body_file: Path
) -> dict[str, float]:
    wrk(url, body_file, 2)  # warm-up: connections, caches, allocator
    pids = {name: process.pid for name, process in stack.processes.items()}
    pids["mock"] = mock.pid
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = wrk(url, body_file, SECONDS)
    for name, pid in pids.items():
        spent = cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_us"] = spent / max(result["requests"], 1) * 1e6
    return result


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    version = subprocess.run(
        [envoy_binary(), "--version"], capture_output=True, text=True, check=False
    )
    envoy = version.stdout.strip().split()[-1].split("/")
    envoy_version = envoy[1] if len(envoy) > 1 else envoy[0]
    python = platform.python_version()
    return f"{os.cpu_count()} CPUs ({model}), Python {python}, Envoy {envoy_version}"


def start_mock(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    log = (workdir / "mock.log").open("wb")
    mock = subprocess.Popen(
        [sys.executable, "-m", "extproc", "mock-provider", "--port", str(port)],
        stdout=log,
        stderr=log,
    )
    wait_until(lambda: _port_open(port), 20, "mock provider", mock)
    return mock


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="extproc-bench-") as tmp:
        workdir = Path(tmp)
        bodies = {}
        for size in SIZES:
            bodies[size] = workdir / f"body-{size}.json"
            bodies[size].write_bytes(chat_body(size))
        mock_port = free_port()
        mock = start_mock(mock_port, workdir)
        stacks: dict[str, tuple[Stack, str]] = {}
        try:
            # Both setups stay up on their own ports, sharing one mock provider, so the
            # rounds can be interleaved and the machine's drift spreads over both.
            setups: list[tuple[str, str | None, list[str] | None]] = [
                ("Envoy alone", "mock", None),
                (
                    "Envoy + bare grpc.aio ext_proc",
                    None,
                    [sys.executable, str(ROOT / "bench" / "bare_extproc.py")],
                ),
                ("Envoy + extproc", None, None),
            ]
            for label, bare, command in setups:
                ports = {
                    k: free_port() for k in ("port", "admin_port", "grpc_port", "metrics_port")
                }
                config = workdir / f"{label.replace(' ', '-')}.yaml"
                config.write_text(CONFIG.format(**ports, mock_port=mock_port))
                stack = Stack(
                    config_path=config,
                    workdir=workdir / label.replace(" ", "-"),
                    envoy_args=["--concurrency", "1"],
                    bare_backend=bare,
                    service_command=command,
                )
                stack.start()
                stacks[label] = (stack, f"http://127.0.0.1:{ports['port']}/v1/chat/completions")
            for _ in range(ROUNDS):
                for label, (stack, url) in stacks.items():
                    for size in SIZES:
                        runs.setdefault((label, size), []).append(
                            measure(stack, mock, url, bodies[size])
                        )
        finally:
            for stack, _ in stacks.values():
                stack.stop()
            mock.terminate()
            mock.wait()
    print(f"\nmachine: {machine()}")
    load = f"wrk -t1 -c{CONNECTIONS} -d{SECONDS}s, POST /v1/chat/completions"
    print(f"load: {load}, Envoy --concurrency 1, median of {ROUNDS} interleaved rounds\n")
    print(
        "| setup | body | requests/s | p50 ms | p99 ms "
        "| Envoy CPU µs/req | ext_proc CPU µs/req | mock CPU µs/req | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (label, size), measured in runs.items():
        r = median_of(measured)
        service = f"{r['service_cpu_us']:.0f}" if "service_cpu_us" in r else "-"
        print(
            f"| {label} | {size // 1024} KB | {r['rps']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['envoy_cpu_us']:.0f} | {service} | {r['mock_cpu_us']:.0f} | {r['errors']:.0f} |"
        )


if __name__ == "__main__":
    main()
