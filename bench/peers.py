"""`make bench-peers`: this gateway beside LiteLLM's proxy, Portkey's gateway and MLflow's AI
Gateway, same mock, same load, same machine.

Each peer is installed in its own environment under .bench/ (on first use): LiteLLM proxy
1.110.2 and the MLflow AI Gateway 3.18.0 in Python venvs (bench/peers/litellm.txt and
mlflow.txt say why their requirements are listed by hand) and the Portkey gateway 1.15.2
with npm. Every gateway gets one core of parallelism: Envoy --concurrency 1 and one service
process, LiteLLM with one worker, MLflow's gateway app under uvicorn with one worker,
Portkey as one node process. Portkey's start-up binds all interfaces; bench/peers/loopback.cjs
makes it bind 127.0.0.1, and the run stops before any load if a peer listens anywhere but
loopback.

Workloads: a 1 KB chat request, JSON and streamed. A peer whose streamed request fails
(Portkey's does, with the @hono/node-server release its package resolves today: HTTP 500)
is measured on JSON only, and the report says so.
CPU per request counts every process of a gateway (Envoy and the service for this one).

Environment: BENCH_SECONDS (default 10), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (16).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    POLICY,
    ROUNDS,
    SECONDS,
    TENANT,
    chat_body,
    machine,
    measure_cpu,
    start_mock,
    start_setup,
    tree,
    verdict,
)
from extproc.control.stack import Stack, free_port, wait_until  # noqa: E402

PEERS = ROOT / ".bench"
LITELLM_REQUIREMENTS = ROOT / "bench" / "peers" / "litellm.txt"
MLFLOW_REQUIREMENTS = ROOT / "bench" / "peers" / "mlflow.txt"
PORTKEY_PACKAGE = "@portkey-ai/gateway@1.15.2"
LOOPBACK = ROOT / "bench" / "peers" / "loopback.cjs"
MASTER_KEY = "sk-bench-peers"  # LiteLLM refuses to start without one; loopback only
LITELLM_CONFIG = """
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: mock-key
litellm_settings:
  telemetry: false
"""
# The MLflow AI Gateway's endpoints are named; its OpenAI route takes the name as the model.
MLFLOW_CONFIG = """
endpoints:
  - name: gpt-4o-mini
    endpoint_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o-mini
      config:
        openai_api_key: mock-key
        openai_api_base: http://127.0.0.1:{mock_port}/v1
"""
OURS = "Envoy + extproc (demo policy, accounting)"
WORKLOADS = (("1 KB", False), ("1 KB, streamed", True))


def install_venv(name: str, requirements: Path) -> Path:
    """A peer's own Python venv under .bench/, made again when its requirements change;
    its bin/ folder."""
    venv = PEERS / name
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    stamp = venv / f".installed-{digest}"
    if not stamp.exists():
        print(f"installing {requirements.stem} into .bench/{name} ...", flush=True)
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.touch()
    return venv / "bin"


def install_portkey() -> Path:
    prefix = PEERS / "portkey"
    start = prefix / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not start.exists():
        print("installing the Portkey gateway into .bench/portkey ...", flush=True)
        prefix.mkdir(parents=True, exist_ok=True)
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is missing (make bench-peers installs it with apt-get)")
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", PORTKEY_PACKAGE],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return start


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on `port` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


def require_loopback(name: str, port: int) -> None:
    loopback = {"0100007F", "00000000000000000000000001000000"}
    addresses = listening_addresses(port)
    if not addresses or not addresses <= loopback:
        raise SystemExit(f"{name} listens on {addresses or 'nothing'}, not loopback only: stop")


def answers(url: str, headers: dict[str, str], body: bytes) -> bool:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200 and json.load(response).get("choices"))
    except (OSError, ValueError):
        return False


def stream_status(url: str, headers: dict[str, str], body: bytes) -> str:
    """'ok' when a streamed request gets SSE events ending in [DONE], else what happened."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}: {error.read().decode(errors='replace')[:80]}"
    except OSError as error:
        return str(error)
    return "ok" if "data: [DONE]" in text else f"no [DONE] in {len(text)} bytes"


@dataclass
class Gateway:
    name: str
    url: str
    headers: dict[str, str]
    pids: Callable[[], list[int]]  # its processes, when measured
    streams: bool = True


def measure(gateway: Gateway, body_file: Path) -> dict[str, float]:
    return measure_cpu(gateway.url, body_file, {"gateway": gateway.pids()}, gateway.headers)


def main() -> None:
    litellm = install_venv("litellm", LITELLM_REQUIREMENTS) / "litellm"
    mlflow = install_venv("mlflow", MLFLOW_REQUIREMENTS) / "python"
    portkey = install_portkey()
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    notes: list[str] = []
    processes: list[subprocess.Popen[bytes]] = []
    stacks: list[Stack] = []
    with tempfile.TemporaryDirectory(prefix="extproc-peers-") as tmp:
        workdir = Path(tmp)
        body = json.loads(chat_body(1024))
        bodies = {}
        for label, streamed in WORKLOADS:
            bodies[label] = workdir / f"body-{streamed}.json"
            bodies[label].write_text(json.dumps({**body, "stream": streamed}))
        mock_port = free_port()
        mock = start_mock(mock_port, workdir)
        processes.append(mock)
        try:
            gateways = []
            for name, tail, bare in (
                ("Envoy alone", TENANT, "mock"),
                (OURS, POLICY.replace("DIRS", "request"), None),
            ):
                stack, url = start_setup(workdir / f"stack-{len(stacks)}", mock_port, tail, bare)
                stacks.append(stack)
                pids = [process.pid for process in stack.processes.values()]
                gateways.append(Gateway(name, url, {}, functools.partial(list, pids)))

            litellm_port = free_port()
            litellm_config = workdir / "litellm.yaml"
            litellm_config.write_text(LITELLM_CONFIG.format(mock_port=mock_port))
            litellm_log = (workdir / "litellm.log").open("wb")
            env = {
                **os.environ,
                "LITELLM_MASTER_KEY": MASTER_KEY,
                # Without it, start-up spends ~30 s trying to download a price list.
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
            litellm_process = subprocess.Popen(
                [
                    *(str(litellm), "--config", str(litellm_config), "--host", "127.0.0.1"),
                    *("--port", str(litellm_port), "--num_workers", "1"),
                ],
                stdout=litellm_log,
                stderr=litellm_log,
                env=env,
            )
            processes.append(litellm_process)
            headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            litellm_gateway = Gateway(
                "LiteLLM proxy 1.110.2",
                f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                headers,
                lambda: tree(litellm_process.pid),
            )
            portkey_port = free_port()
            portkey_log = (workdir / "portkey.log").open("wb")
            portkey_process = subprocess.Popen(
                ["node", "-r", str(LOOPBACK), str(portkey), f"--port={portkey_port}", "--headless"],
                stdout=portkey_log,
                stderr=portkey_log,
            )
            processes.append(portkey_process)
            portkey_gateway = Gateway(
                "Portkey gateway 1.15.2",
                f"http://127.0.0.1:{portkey_port}/v1/chat/completions",
                {
                    "Authorization": "Bearer mock-key",
                    "x-portkey-provider": "openai",
                    "x-portkey-custom-host": f"http://127.0.0.1:{mock_port}/v1",
                },
                lambda: tree(portkey_process.pid),
            )
            mlflow_port = free_port()
            mlflow_config = workdir / "mlflow.yaml"
            mlflow_config.write_text(MLFLOW_CONFIG.format(mock_port=mock_port))
            mlflow_log = (workdir / "mlflow.log").open("wb")
            # MLflow 3 has no `gateway start` command: this is the app it served, under
            # uvicorn with one worker process.
            mlflow_process = subprocess.Popen(
                [
                    *(str(mlflow), "-m", "uvicorn", "--factory"),
                    "mlflow.gateway.app:create_app_from_env",
                    *("--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"),
                    *("--log-level", "warning"),
                ],
                stdout=mlflow_log,
                stderr=mlflow_log,
                env={
                    **os.environ,
                    "MLFLOW_GATEWAY_CONFIG": str(mlflow_config),
                    "MLFLOW_DISABLE_TELEMETRY": "true",
                },
            )
            processes.append(mlflow_process)
            mlflow_gateway = Gateway(
                "MLflow AI Gateway 3.18.0",
                f"http://127.0.0.1:{mlflow_port}/v1/chat/completions",
                {},
                lambda: tree(mlflow_process.pid),
            )
            plain = bodies["1 KB"].read_bytes()
            for gateway, process in (
                (litellm_gateway, litellm_process),
                (portkey_gateway, portkey_process),
                (mlflow_gateway, mlflow_process),
            ):
                wait_until(
                    lambda g=gateway: answers(
                        g.url, {**g.headers, "Content-Type": "application/json"}, plain
                    ),
                    120,
                    gateway.name,
                    process,
                )
                require_loopback(gateway.name, int(gateway.url.split(":")[2].split("/")[0]))
                payload = bodies["1 KB, streamed"].read_bytes()
                status = stream_status(
                    gateway.url,
                    {**gateway.headers, "Content-Type": "application/json"},
                    payload,
                )
                if status != "ok":
                    gateway.streams = False
                    notes.append(f"{gateway.name}: streamed requests fail ({status}); JSON only.")
                gateways.append(gateway)
            for _ in range(ROUNDS):
                for gateway in gateways:
                    for label, streamed in WORKLOADS:
                        if streamed and not gateway.streams:
                            continue
                        result = measure(gateway, bodies[label])
                        print(f"{gateway.name} / {label}: {result['rps']:,.0f} req/s", flush=True)
                        runs.setdefault((gateway.name, label), []).append(result)
        finally:
            for stack in stacks:
                stack.stop()
            for process in processes:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    report(runs, notes)


def report(runs: dict[tuple[str, str], list[dict[str, float]]], notes: list[str]) -> None:
    print(f"\nmachine: {machine()}")
    print(
        f"load: wrk -t1 -c16 -d{SECONDS}s, POST /v1/chat/completions (1 KB chat), one core of "
        f"parallelism per gateway, median of {ROUNDS} interleaved rounds\n"
    )
    print(
        "| gateway | request | requests/s | p50 ms | p99 ms | gateway CPU µs/req "
        "| requests/s vs this gateway | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    medians = {
        key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in runs.items()
    }
    for (name, label), r in medians.items():
        ours = medians.get((OURS, label))
        ratio = f"{r['rps'] / ours['rps']:.2f}x" if ours else "-"
        print(
            f"| {name} | {label} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['gateway_cpu_us']:,.0f} | {ratio} | {r['errors']:.0f} |"
        )
    for note in notes:
        print(f"\n{note}")
    verdicts = targets(medians)
    if verdicts:
        print("\nthe performance issue's target 7, on 1 KB JSON:")
        print("\n".join(verdicts))


# The performance issue's target 7: at least these multiples of a peer's requests/s.
TARGETS = {"Portkey gateway": 5.0, "LiteLLM proxy": 50.0}


def targets(medians: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    """This gateway's requests/s over each targeted peer's on 1 KB JSON, against the
    target."""
    ours = medians.get((OURS, "1 KB"))
    if ours is None:
        return []
    lines = []
    for (name, label), peer in medians.items():
        wanted = next((x for prefix, x in TARGETS.items() if name.startswith(prefix)), None)
        if wanted is None or label != "1 KB" or not peer["rps"]:
            continue
        ratio = ours["rps"] / peer["rps"]
        lines.append(
            verdict(
                f"7. >= {wanted:g}x {name}'s requests/s",
                ratio >= wanted,
                f"{ratio:.2f}x",
                f"{ours['rps']:,.0f} against {peer['rps']:,.0f}",
            )
        )
    return lines


if __name__ == "__main__":
    main()
