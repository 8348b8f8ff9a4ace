"""`make bench`: Envoy alone vs Envoy + the ext_proc service, same mock provider, same machine.

Setups: Envoy alone; Envoy + a bare ext_proc that answers the same three messages with
no logic, on grpc.aio and on h2grpc (the service's transport): the cost of gRPC in
Python either way (the h2grpc one also relays paced SSE chunks unchanged: the floor per
streamed event); Envoy + the service with accounting
off, on (the default), with a budget, and with the demo policy. For each workload: a
warm-up, then wrk with a fixed number of connections for a fixed time. Every
Envoy runs with --concurrency 1 (one worker thread), so the setups get the same
parallelism. CPU per request is read from /proc for Envoy, the ext_proc server and the
mock. Figures are printed, not asserted: timings are not tests.

Then latency when not saturated: Envoy alone, the bare h2grpc ext_proc and the full
pipeline (the demo policy and accounting) at a fixed BENCH_RATE requests/s
(bench/rate.py), JSON and streamed, with Envoy's wait on the ext_proc per message (its
access log's extproc_* fields).

Environment: BENCH_SECONDS (default 10), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (16),
BENCH_RATE (200), BENCH_RATE_SECONDS (10), BENCH_ONLY=rated (the fixed-rate part alone:
~3 minutes).
"""

from __future__ import annotations

import contextlib
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rate import fixed_rate  # noqa: E402
from extproc.control.render.listener import EXTPROC_LOG_FIELDS  # noqa: E402
from extproc.control.stack import (  # noqa: E402
    Stack,
    envoy_binary,
    extproc_argv,
    free_port,
    process_env,
    wait_until,
)

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
WRK_TIMEOUT = 30
RATE = float(os.environ.get("BENCH_RATE", "200"))
RATE_SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "10"))
# "Paced" streams: the upstream sends their events this far apart, as a provider does, so
# each event reaches the gateway on its own (one ext_proc message each). Unpaced, a whole
# stream arrives at once and Envoy passes it on in one or two chunks.
PACE_MS = int(os.environ.get("BENCH_PACE_MS", "2"))
PACED_HEADERS = {"x-mock-chunk-delay-ms": str(PACE_MS)}
SIZES = (1024, 16 * 1024)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

CONFIG = """
listener: {{port: {port}}}
admin: {{port: {admin_port}}}
service: {{grpc_address: "127.0.0.1:{grpc_port}", metrics_address: "127.0.0.1:{metrics_port}"}}
backends:
  - {{name: mock, url: "http://127.0.0.1:{mock_port}/v1"}}
  - {{name: mock-anthropic, schema: anthropic, url: "http://127.0.0.1:{mock_port}/v1"}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: mock}}]}}
  - {{name: claude-bench, routes: [{{backend: mock-anthropic}}]}}
prices: {{models: [{{models: ["*"], input: 0.15, output: 0.6}}]}}
"""
TENANT = """
tenants: [{name: bench}]
auth: {anonymous_tenant: bench}
"""


def chat_body(size: int, answer_words: int | None = None) -> bytes:
    """A chat request of about `size` bytes: a system prompt and a user message (which the
    mock echoes). With answer_words, the filler goes to the system prompt and the user
    message has that many words: a short answer to the same size of request."""
    skeleton = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": ""},
        ],
        "temperature": 0.2,
    }
    if answer_words is not None:
        skeleton["messages"][1]["content"] = " ".join(["word"] * answer_words)  # type: ignore[index]
    filler = size - len(json.dumps(skeleton))
    words = ("lorem ipsum dolor sit amet " * (filler // 27 + 1))[: max(filler, 1)]
    skeleton["messages"][0 if answer_words is not None else 1]["content"] = words  # type: ignore[index]
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


def wrk(
    url: str, body_file: Path, seconds: int, headers: dict[str, str] | None = None
) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    extra = "".join(
        f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items()
    )
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
        + extra
    )
    # A slow peer's stream takes seconds: past wrk's default timeout (2 s) it would be
    # dropped uncounted, its CPU charged to the requests that finished.
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            f"{WRK_TIMEOUT}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(_field(r"(\d+) requests in", out))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": requests,
        "rps": float(_field(r"Requests/sec:\s+([\d.]+)", out)),
        "p50_ms": _duration_ms(_field(r"^\s+50%\s+(\S+)\s*$", out)),
        "p99_ms": _duration_ms(_field(r"^\s+99%\s+(\S+)\s*$", out)),
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(int(n) for n in failed.groups()) if failed else 0),
    }


def headers_for(workload: str) -> dict[str, str] | None:
    return PACED_HEADERS if workload.endswith(", paced") else None


def measure(
    stack: Stack,
    mock: subprocess.Popen[bytes],
    url: str,
    body_file: Path,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    # A process and its children: the service's workers count as the service.
    groups = {name: tree(process.pid) for name, process in stack.processes.items()}
    groups["mock"] = [mock.pid]
    return measure_cpu(url, body_file, groups, headers)


def measure_cpu(
    url: str,
    body_file: Path,
    groups: dict[str, list[int]],
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """A warm-up, then wrk's figures, "<group>_cpu_us" (each group's CPU per request) and
    "idle_pct" (the share of the machine's CPU time that no process used meanwhile)."""
    wrk(url, body_file, 2, headers)  # warm-up: connections, caches, allocator
    before = {name: tree_cpu(pids) for name, pids in groups.items()}
    idle_before = idle_ticks()
    result = wrk(url, body_file, SECONDS, headers)
    idle, total = (after - first for after, first in zip(idle_ticks(), idle_before, strict=True))
    for name, pids in groups.items():
        spent = tree_cpu(pids) - before[name]
        result[f"{name}_cpu_us"] = spent / max(result["requests"], 1) * 1e6
    result["idle_pct"] = 100 * idle / max(total, 1)
    return result


def idle_ticks() -> tuple[int, int]:
    """The machine's idle (and I/O wait) clock ticks, and all its ticks, since boot."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a worker that has exited
            total += cpu_seconds(pid)
    return total


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


def start_mock(port: int, workdir: Path, replay: bool = True) -> subprocess.Popen[bytes]:
    """The mock provider on the port: its answers replayed by bench/upstream.py (~20 µs
    of CPU per request), or with replay=False the aiohttp mock itself (~75-120 µs)."""
    log = (workdir / "mock.log").open("wb")
    command = (
        [sys.executable, str(ROOT / "bench" / "upstream.py"), str(port)]
        if replay
        else extproc_argv("mock-provider", "--port", str(port))
    )
    mock = subprocess.Popen(command, stdout=log, stderr=log, env=process_env({}))
    wait_until(lambda: _port_open(port), 20, "mock provider", mock)
    return mock


def start_setup(
    workdir: Path,
    mock_port: int,
    tail: str,
    bare: str | None = None,
    command: list[str] | None = None,
    workers: int = 1,
) -> tuple[Stack, str]:
    """Envoy (one worker thread) and the service (or a bare ext_proc command, or none with a
    bare backend) in front of the mock, on free ports; the stack and its chat URL."""
    ports = {k: free_port() for k in ("port", "admin_port", "grpc_port", "metrics_port")}
    workdir.mkdir(parents=True)
    config = workdir / "config.yaml"
    text = CONFIG.format(**ports, mock_port=mock_port)
    if workers > 1:  # a socket each: the ports after grpc_port may be taken
        socket = workdir / "sock" / "extproc.sock"
        text = text.replace(
            f'grpc_address: "127.0.0.1:{ports["grpc_port"]}"',
            f'grpc_address: "unix://{socket}", workers: {workers}',
        )
    config.write_text(text + tail)
    stack = Stack(
        config_path=config,
        workdir=workdir / "stack",
        envoy_args=["--concurrency", "1"],
        bare_backend=bare,
        service_command=command,
    )
    stack.start()
    return stack, f"http://127.0.0.1:{ports['port']}/v1/chat/completions"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [key for key in runs[0] if all(key in run for run in runs)]
    return {key: statistics.median(run[key] for run in runs) for key in keys}


# The demo config's policy (examples/demo.yaml): e-mail redaction, card blocking and a
# deny rule, all on requests. The second variant also checks e-mail in model output,
# which has the gateway read every response (per streamed chunk).
POLICY = """
policies:
  - name: demo
    pii: [{detector: email, apply_to: [DIRS]}, {detector: payment_card, action: block}]
    deny: [{name: prompt-injection, keywords: ["ignore previous instructions"], roles: [user]}]
tenants: [{name: bench, policies: [demo]}]
auth: {anonymous_tenant: bench}
"""
# Every request may be answered from the response cache (after the first, all are hits).
CACHE = """
tenants: [{name: bench, cache: {mode: all}}]
auth: {anonymous_tenant: bench}
"""
# Accounting off: the service reads no response (the cost of a policy-only gateway).
NO_USAGE = TENANT + "accounting: {skip_usage: true}\n"
# A budget every request reserves in (and settles with) the in-process store; large
# enough that nothing is refused.
BUDGET = """
tenants:
  - name: bench
    budgets: [{name: daily, window: day, max_tokens: 1000000000000}]
auth: {anonymous_tenant: bench}
"""
BARE = [sys.executable, str(ROOT / "bench" / "bare_extproc.py")]
BARE_H2 = [sys.executable, str(ROOT / "bench" / "bare_h2grpc.py")]
BARE_H2_LABEL = "Envoy + bare h2grpc ext_proc"
PLAIN = ("1 KB", "16 KB")
ALL = ("1 KB", "16 KB", "1 KB, streamed")
STREAMED = ("1 KB", "1 KB, streamed")
PACED = ("1 KB, streamed, paced", "1 KB, streamed -> Anthropic, paced")
# At a fixed rate: JSON, and a stream whose first event arrives alone (time to first token).
SHORT_STREAM = "1 KB, 16-word stream, paced"
RATED = ("1 KB", SHORT_STREAM)
NO_ACCOUNTING = "Envoy + extproc, accounting off"
ACCOUNTING = "Envoy + extproc"
# The OpenAI request sent to a model whose backend speaks Anthropic's API.
TRANSLATED = ("1 KB -> Anthropic", "1 KB, streamed -> Anthropic")
BUDGETS = "Envoy + extproc + budget"
CACHED = "Envoy + extproc, cache hits"
# The full pipeline: tenant, routing, the demo policy, accounting of the response.
FULL = "Envoy + extproc, demo policy"
# The same with service.workers: 2 (Envoy still one worker thread).
FULL_WORKERS = "Envoy + extproc, demo policy, 2 workers"
WORKERS = {FULL_WORKERS: 2}
# The setups measured at a fixed rate (BENCH_ONLY=rated: only these, only that).
RATED_SETUPS = ("Envoy alone", BARE_H2_LABEL, FULL)
ONLY_RATED = os.environ.get("BENCH_ONLY") == "rated"
# (label, bare backend, ext_proc command, config tail, workloads)
SETUPS: list[tuple[str, str | None, list[str] | None, str, tuple[str, ...]]] = [
    ("Envoy alone", "mock", None, TENANT, (*ALL, PACED[0])),
    ("Envoy + bare grpc.aio ext_proc", None, BARE, TENANT, PLAIN),
    (BARE_H2_LABEL, None, BARE_H2, TENANT, (*PLAIN, PACED[0])),
    (NO_ACCOUNTING, None, None, NO_USAGE, ALL),
    (ACCOUNTING, None, None, TENANT, ALL + TRANSLATED + PACED),
    (BUDGETS, None, None, BUDGET, STREAMED),
    (CACHED, None, None, CACHE, STREAMED),
    (FULL, None, None, POLICY.replace("DIRS", "request"), PLAIN),
    (FULL_WORKERS, None, None, POLICY.replace("DIRS", "request"), PLAIN),
    (
        "Envoy + extproc, demo policy + output check",
        None,
        None,
        POLICY.replace("DIRS", "request, response"),
        (*ALL, PACED[0]),
    ),
]
# Workloads: (label, body size, streamed, model)
WORKLOADS = [
    ("1 KB", 1024, False, "gpt-4o-mini"),
    ("16 KB", 16 * 1024, False, "gpt-4o-mini"),
    ("1 KB, streamed", 1024, True, "gpt-4o-mini"),
    ("1 KB -> Anthropic", 1024, False, "claude-bench"),
    ("1 KB, streamed -> Anthropic", 1024, True, "claude-bench"),
    (PACED[0], 1024, True, "gpt-4o-mini"),
    (PACED[1], 1024, True, "claude-bench"),
    (SHORT_STREAM, 1024, True, "gpt-4o-mini"),
]


def stream_events(size: int) -> int:
    """SSE events the mock sends for a streamed chat_body(size): one per word of the echoed
    user message, plus the role chunk, the finish chunk and [DONE]."""
    content = json.loads(chat_body(size))["messages"][1]["content"]
    return len(content.split()) + 3


def main() -> None:
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    rated: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="extproc-bench-") as tmp:
        workdir = Path(tmp)
        bodies: dict[str, Path] = {}
        for label, size, streamed, model in WORKLOADS:
            bodies[label] = workdir / f"body-{len(bodies)}.json"
            body = json.loads(chat_body(size, 16 if label == SHORT_STREAM else None))
            body["model"] = model
            if streamed:
                body["stream"] = True
            bodies[label].write_text(json.dumps(body))
        mock_port = free_port()
        mock = start_mock(mock_port, workdir)
        stacks: dict[str, tuple[Stack, str]] = {}
        try:
            # All setups stay up on their own ports, sharing one mock provider, so the
            # rounds can be interleaved and the machine's drift spreads over all of them.
            for label, bare, command, tail, _ in SETUPS:
                if ONLY_RATED and label not in RATED_SETUPS:
                    continue
                name = label.replace(" ", "-").replace(",", "").replace("+", "")
                stacks[label] = start_setup(
                    workdir / name, mock_port, tail, bare, command, WORKERS.get(label, 1)
                )
            # Before any request: what a service costs to keep around.
            idle = {
                label: [memory_mb(pid) for pid in tree(stacks[label][0].processes["service"].pid)]
                for label in (FULL, FULL_WORKERS)
                if label in stacks
            }
            workloads = {label: names for label, *_, names in SETUPS}
            for _ in range(0 if ONLY_RATED else ROUNDS):
                for label, (stack, url) in stacks.items():
                    for workload in workloads[label]:
                        result = measure(stack, mock, url, bodies[workload], headers_for(workload))
                        print(f"{label} / {workload}: {result['rps']:,.0f} req/s", flush=True)
                        runs.setdefault((label, workload), []).append(result)
            for _ in range(ROUNDS):
                for label in RATED_SETUPS:
                    for workload in RATED:
                        stack, url = stacks[label]
                        body = bodies[workload].read_bytes()
                        log = stack.workdir / "envoy.log"
                        offset = log.stat().st_size
                        result = fixed_rate(url, body, RATE, RATE_SECONDS, headers_for(workload))
                        result.update(extproc_waits(log, offset))
                        print(f"{label} / {workload} at {RATE:.0f}/s: {result}", flush=True)
                        rated.setdefault((label, workload), []).append(result)
        finally:
            for stack, _ in stacks.values():
                stack.stop()
            mock.terminate()
            mock.wait()
    if ONLY_RATED:
        print(f"\nmachine: {machine()}")
    else:
        report(runs)
    report_rated(rated)
    if idle:
        report_idle(idle)
    verdicts = targets(
        {key: median_of(measured) for key, measured in runs.items()},
        {key: median_of(measured) for key, measured in rated.items()},
    )
    if verdicts:
        print("\nthe performance issue's targets measured here, each beside its floor:")
        print("\n".join(verdicts))


# The ext_proc phases whose waits the access log carries (render.listener.EXTPROC_LOG_FIELDS).
WAIT_PHASES = ("request_headers", "request_body", "response_headers", "response_body")


def extproc_waits(log: Path, offset: int) -> dict[str, float]:
    """Medians of Envoy's waits on the ext_proc per message (µs), from the access log lines
    written after `offset` (its extproc_* fields; none for Envoy alone). A response
    chunk's wait is the mean of its exchange's response-body calls."""
    time.sleep(1.2)  # Envoy flushes its access log once a second
    with log.open("rb") as lines:
        lines.seek(offset)
        entries = [json.loads(line) for line in lines if line.startswith(b"{")]
    waits: dict[str, list[int]] = {}
    for entry in entries:
        fields = {
            k: v
            for k, v in entry.items()
            if k in EXTPROC_LOG_FIELDS and isinstance(v, str) and v.isdigit()
        }
        for phase in WAIT_PHASES:
            if f"extproc_{phase}_us" not in fields:
                continue
            wait = int(fields[f"extproc_{phase}_us"])
            if phase == "response_body":  # all the response's calls: their mean
                calls = int(fields["extproc_response_body_calls"])
                if not calls:
                    continue
                wait //= calls
            waits.setdefault(f"{phase}_wait_us", []).append(wait)
    return {key: statistics.median(values) for key, values in waits.items()}


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident set size, and proportional set size (each shared page split among the
    processes sharing it), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name] = int(value) / 1024
    return fields.get("Rss:", 0.0), fields.get("Pss:", 0.0)


def report_idle(idle: dict[str, list[tuple[float, float]]]) -> None:
    print("\nservice memory at idle, after start-up and before any request:")
    for label, processes in idle.items():
        each = " + ".join(f"{pss:.0f}" for _, pss in processes)
        rss = processes[0][0]
        print(
            f"- {label}: PSS {sum(pss for _, pss in processes):.0f} MB ({each} MB), "
            f"RSS of the {'supervisor' if len(processes) > 1 else 'service'} {rss:.0f} MB"
        )


def report_rated(rated: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    print(
        f"\nat a fixed {RATE:.0f} requests/s for {RATE_SECONDS:.0f} s (open loop, latency from "
        f"each request's scheduled start), median of {ROUNDS} rounds; first byte = the first "
        "SSE event of a streamed reply (time to first token)\n"
    )
    print("| setup | request | p50 ms | p99 ms | first byte p50 ms | first byte p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    medians = {key: median_of(measured) for key, measured in rated.items()}
    for (label, workload), r in medians.items():
        print(
            f"| {label} | {workload} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['first_p50_ms']:.2f} | {r['first_p99_ms']:.2f} | {r['errors']:.0f} |"
        )
    print(
        "\nEnvoy's wait on the ext_proc per message, the same runs (µs, median; its access "
        "log's extproc_* fields; a response chunk: its exchange's mean)\n"
    )
    print("| setup | request | " + " | ".join(WAIT_PHASES) + " |")
    print("|---|---|" + "---|" * len(WAIT_PHASES))
    for (label, workload), r in medians.items():
        if f"{WAIT_PHASES[0]}_wait_us" in r:
            row = " | ".join(
                f"{r[f'{w}_wait_us']:.0f}" if f"{w}_wait_us" in r else "" for w in WAIT_PHASES
            )
            print(f"| {label} | {workload} | {row} |")
    print()
    for workload in RATED:
        alone = medians.get(("Envoy alone", workload))
        for label, what in ((FULL, "the full pipeline"), (BARE_H2_LABEL, "a bare h2grpc ext_proc")):
            with_it = medians.get((label, workload))
            if alone is None or with_it is None:
                continue
            added = {key: with_it[key] - alone[key] for key in alone if key.endswith("_ms")}
            print(
                f"- {workload}: {what} adds p50 {added['p50_ms']:+.2f} ms, "
                f"p99 {added['p99_ms']:+.2f} ms, first byte p50 {added['first_p50_ms']:+.2f} ms"
            )


def pairs(
    medians: dict[tuple[str, str], dict[str, float]],
    first: str,
    second: str,
    workloads: tuple[str, ...],
) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    """(workload, first's medians, second's medians) for the workloads both setups ran."""
    return [
        (workload, medians[(first, workload)], medians[(second, workload)])
        for workload in workloads
        if (first, workload) in medians and (second, workload) in medians
    ]


def paced_event(
    medians: dict[tuple[str, str], dict[str, float]], label: str, workload: str
) -> tuple[float, float] | None:
    """The service's and Envoy's CPU per event of a paced stream beyond the request's own
    (the same setup's JSON request), in µs; None unless both were measured."""
    events = stream_events(1024)
    count = {PACED[0]: events, PACED[1]: events + 3}[workload]  # Anthropic: start, block, ping
    plain = {PACED[0]: "1 KB", PACED[1]: TRANSLATED[0]}[workload]
    slow, fast = medians.get((label, workload)), medians.get((label, plain))
    if slow is None or fast is None:
        return None
    return (
        (slow["service_cpu_us"] - fast["service_cpu_us"]) / count,
        (slow["envoy_cpu_us"] - fast["envoy_cpu_us"]) / count,
    )


def verdict(target: str, met: bool, measured: str, floor: str) -> str:
    """One line of a benchmark's verdicts on the performance issue's targets."""
    return f"- {target}: {measured} ({floor}): {'met' if met else 'not met'}"


def targets(
    medians: dict[tuple[str, str], dict[str, float]],
    rated: dict[tuple[str, str], dict[str, float]],
) -> list[str]:
    """The performance issue's targets 2-4 against this run's medians, each beside its
    floor (targets 1 and 5-7: bench/large_prompts.py, fixed_rate.py, responses.py, mcp.py
    and peers.py). A target whose runs are missing is left out."""
    lines: list[str] = []

    def judged(target: str, met: bool, measured: str, floor: str) -> None:
        lines.append(verdict(target, met, measured, floor))

    full, alone = medians.get((FULL, "1 KB")), medians.get(("Envoy alone", "1 KB"))
    bare = medians.get((BARE_H2_LABEL, "1 KB"))
    if full is not None:
        rps, cpu, envoy = full["rps"], full["service_cpu_us"], full["envoy_cpu_us"]
        # A throughput's floor is the most the transport allows: the bare ext_proc's, and
        # Envoy's without one.
        floor = ", ".join(
            f"{name} {row['rps']:,.0f}"
            for name, row in (("bare h2grpc ext_proc", bare), ("Envoy alone", alone))
            if row is not None
        )
        judged("2. requests/s of 1 KB, >= 5,000", rps >= 5000, f"{rps:,.0f}", floor or "no floor")
        floor = f"bare h2grpc ext_proc {bare['service_cpu_us']:,.0f} µs" if bare else "no floor"
        judged("2. service CPU per request, <= 130 µs", cpu <= 130, f"{cpu:,.0f} µs", floor)
        if alone is not None:
            ratio, own = envoy / alone["envoy_cpu_us"], alone["envoy_cpu_us"]
            floor = (
                f"bare h2grpc ext_proc {bare['envoy_cpu_us'] / own:.2f}x" if bare else "no floor"
            )
            judged(
                "2. Envoy's CPU per request, <= 2x Envoy alone's",
                ratio <= 2.0,
                f"{ratio:.2f}x ({envoy:,.0f} against {own:,.0f} µs)",
                floor,
            )
    # The bare ext_proc relays OpenAI events only: the floor of both rows.
    bare_event = paced_event(medians, BARE_H2_LABEL, PACED[0])
    floor = f"bare h2grpc ext_proc {bare_event[0]:,.1f} µs" if bare_event else "no floor"
    for workload, what in ((PACED[0], "with accounting"), (PACED[1], "translated")):
        event = paced_event(medians, ACCOUNTING, workload)
        if event is not None:
            target = f"3. service CPU per paced event {what}, <= 12 µs"
            relayed = floor if workload == PACED[0] or not bare_event else f"{floor} on OpenAI's"
            judged(target, event[0] <= 12, f"{event[0]:,.1f} µs", relayed)
    for workload, what in (("1 KB", "JSON"), (SHORT_STREAM, "a paced stream")):
        with_it, floor_run = rated.get((FULL, workload)), rated.get((BARE_H2_LABEL, workload))
        if with_it is None or floor_run is None:
            continue
        added = with_it["first_p50_ms"] - floor_run["first_p50_ms"]
        target = f"4. first byte p50 over the bare h2grpc ext_proc, {what}, <= +0.3 ms"
        judged(target, added <= 0.3, f"{added:+.2f} ms", f"bare {floor_run['first_p50_ms']:.2f} ms")
    return lines


def report(runs: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    print(f"\nmachine: {machine()}")
    load = f"wrk -t1 -c{CONNECTIONS} -d{SECONDS}s, POST /v1/chat/completions"
    print(f"load: {load}, Envoy --concurrency 1, median of {ROUNDS} interleaved rounds\n")
    print(
        "| setup | request | requests/s | p50 ms | p99 ms "
        "| Envoy CPU µs/req | ext_proc CPU µs/req | mock CPU µs/req | CPU idle | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    medians = {key: median_of(measured) for key, measured in runs.items()}
    for (label, workload), r in medians.items():
        service = f"{r['service_cpu_us']:,.0f}" if "service_cpu_us" in r else "-"
        print(
            f"| {label} | {workload} | {r['rps']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['envoy_cpu_us']:,.0f} | {service} | {r['mock_cpu_us']:,.0f} "
            f"| {r['idle_pct']:.0f}% | {r['errors']:.0f} |"
        )
    events = stream_events(1024)
    print(f"\nstreamed responses carry {events} SSE events; service CPU per streamed event:")

    def cpu(label: str, workload: str) -> float | None:
        return medians.get((label, workload), {}).get("service_cpu_us")

    per_event: dict[str, float] = {}
    output_check = "Envoy + extproc, demo policy + output check"
    for label in (NO_ACCOUNTING, ACCOUNTING, BUDGETS, output_check):
        streamed, plain = cpu(label, "1 KB, streamed"), cpu(label, "1 KB")
        if streamed is not None and plain is not None:
            per_event[label] = (streamed - plain) / events
            print(f"- {label}: {per_event[label]:,.1f} µs per event beyond the request's own cost")
    print(
        f"\npaced streams (events {PACE_MS} ms apart: one ext_proc message each), CPU per "
        "event beyond the request's own cost:"
    )
    alone = medians.get(("Envoy alone", PACED[0]), {}).get("envoy_cpu_us")
    paced_runs = (
        (ACCOUNTING, PACED[0]),
        (ACCOUNTING, PACED[1]),
        (output_check, PACED[0]),
        (BARE_H2_LABEL, PACED[0]),  # the transport alone: the floor under the rows above
    )
    for label, workload in paced_runs:
        event = paced_event(medians, label, workload)
        if event is not None:
            own, envoy = event
            print(f"- {label}, {workload}: service {own:,.1f} µs, Envoy {envoy:,.1f} µs")
    if alone is not None and ("Envoy alone", "1 KB") in medians:
        plain_alone = medians[("Envoy alone", "1 KB")]["envoy_cpu_us"]
        print(f"- Envoy alone, {PACED[0]}: Envoy {(alone - plain_alone) / events:,.1f} µs")
    print("\naccounting (usage, cost, metrics, record), service CPU:")
    on, off = cpu(ACCOUNTING, "1 KB"), cpu(NO_ACCOUNTING, "1 KB")
    if on is not None and off is not None:
        print(f"- buffered 1 KB JSON response: {on - off:+,.0f} µs per request")
    if ACCOUNTING in per_event and NO_ACCOUNTING in per_event:
        added = per_event[ACCOUNTING] - per_event[NO_ACCOUNTING]
        print(f"- streamed: {added:+,.1f} µs per event")
    for workload in STREAMED:
        budget, plain = cpu(BUDGETS, workload), cpu(ACCOUNTING, workload)
        if budget is not None and plain is not None:
            print(f"- budget reserve + settle, {workload}: {budget - plain:+,.0f} µs per request")
    print("\nresponse cache: a hit answered by the service vs a provider call")
    for workload, hit, call in pairs(medians, CACHED, ACCOUNTING, STREAMED):
        print(
            f"- {workload}: service CPU {hit['service_cpu_us']:,.0f} vs "
            f"{call['service_cpu_us']:,.0f} µs, p50 {hit['p50_ms']:.2f} vs "
            f"{call['p50_ms']:.2f} ms, {hit['rps']:,.0f} vs {call['rps']:,.0f} req/s"
        )
    print("\ntranslation (OpenAI client, Anthropic backend), service CPU:")
    same, translated = cpu(ACCOUNTING, "1 KB"), cpu(ACCOUNTING, TRANSLATED[0])
    if same is not None and translated is not None:
        print(f"- 1 KB request and its JSON answer: {translated - same:+,.0f} µs per request")
    streamed = cpu(ACCOUNTING, TRANSLATED[1])
    if streamed is not None and translated is not None and ACCOUNTING in per_event:
        anthropic_events = stream_events(1024) + 3  # start, block start/stop, ping, ... [DONE]
        translated_event = (streamed - translated) / anthropic_events
        print(
            f"- streamed: {translated_event:,.1f} µs per Anthropic event translated "
            f"({translated_event - per_event[ACCOUNTING]:+,.1f} µs over relaying an OpenAI event)"
        )
    for workload in PLAIN:
        with_policy, without = (
            cpu(FULL, workload),
            cpu("Envoy + extproc", workload),
        )
        if with_policy is not None and without is not None:
            print(f"- demo policy, {workload} prompt: {with_policy - without:+,.0f} µs per request")
    print("\nservice.workers: 2 vs 1 (the full pipeline; Envoy --concurrency 1):")
    for workload, two, one in pairs(medians, FULL_WORKERS, FULL, PLAIN):
        print(
            f"- {workload}: {two['rps']:,.0f} vs {one['rps']:,.0f} req/s, service CPU "
            f"{two['service_cpu_us']:,.0f} vs {one['service_cpu_us']:,.0f} µs per request"
        )


if __name__ == "__main__":
    main()
