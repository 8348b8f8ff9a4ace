"""An MCP `tools/call` through the gateway beside the same call straight to the server, in
`make bench`: the service's CPU per call (wrk, saturated) and the latency the gateway adds
at a fixed rate (open loop), with Chat Completions' row of the same run for scale. The
server's answers are replayed by the benchmark's upstream (bench/upstream.py), recorded
once from the demo MCP server, so the server costs what the chat rows' upstream does.

Rows: the demo MCP server alone (JSON answers, stateless: every POST stands alone); the
call through `/mcp/demo` (one server, the tenant's access checked, the demo policy on the
arguments and the result, the answer read); through `/mcp`, the virtual server (the
session loaded, the call routed by the cached tool list, the upstream session set); and a
1 KB Chat Completions request through the same gateway. Printed, not asserted; the docs'
benchmark page keeps them with the date and host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import rate, run  # noqa: E402
from extproc.control.stack import extproc_argv, free_port, process_env, wait_until  # noqa: E402

MCP_RATE = float(os.environ.get("BENCH_MCP_RATE", "100"))
ACCEPT = {"accept": "application/json, text/event-stream"}
CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "echo", "arguments": {"text": "hello from the benchmark"}},
}
SERVERS = """mcp_servers:
  - {{name: demo, url: "http://127.0.0.1:{mcp_port}/mcp"}}
"""
TENANT = """
tenants:
  - name: bench
    policies: [demo]
    mcp: {servers: [demo], deny_tools: [demo/run_shell]}
auth: {anonymous_tenant: bench}
"""
# The demo policy (run.POLICY's), its e-mail rule on tool arguments and results too.
POLICY = run.POLICY.replace("DIRS", "request, tool_call, tool_result")


def initialize(url: str) -> str:
    """A session of the virtual server: its id."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json", **ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        session = answer.headers["mcp-session-id"]
    notified = urllib.request.Request(
        url,
        data=b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        headers={"content-type": "application/json", "mcp-session-id": session, **ACCEPT},
    )
    urllib.request.urlopen(notified, timeout=10).close()
    return str(session)


def called(url: str, headers: dict[str, str]) -> None:
    """One call, checked: the benchmark measures answers, not errors."""
    request = urllib.request.Request(
        url,
        data=json.dumps(CALL).encode(),
        headers={"content-type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        result = json.load(answer)
    assert result.get("result", {}).get("content"), result


def _stopped(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait()


def main() -> None:
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="extproc-bench-mcp-") as tmp, ExitStack() as stop:
        workdir = Path(tmp)
        mock_port, mcp_port = free_port(), free_port()
        log = stop.enter_context((workdir / "mcp.log").open("wb"))
        command = extproc_argv("mcp-demo", "--port", str(mcp_port), "--json", "--stateless")
        server = subprocess.Popen(command, stdout=log, stderr=log, env=process_env({}))
        stop.callback(_stopped, server)
        wait_until(lambda: run._port_open(mcp_port), 20, "demo MCP server", server)
        # The benchmark's upstream answers chat requests and, recorded from the demo
        # server once, its MCP calls: ~20 µs each, where FastMCP takes over a millisecond
        # of the same two cores.
        upstream = [sys.executable, str(ROOT / "bench" / "upstream.py"), str(mock_port)]
        mock = subprocess.Popen(
            [*upstream, f"http://127.0.0.1:{mcp_port}/mcp"], stdout=log, stderr=log
        )
        stop.callback(_stopped, mock)
        wait_until(lambda: run._port_open(mock_port), 20, "the benchmark's upstream", mock)
        # run.CONFIG is a template still: its braces doubled.
        servers = SERVERS.format(mcp_port=mock_port).replace("{", "{{").replace("}", "}}")
        run.CONFIG = run.CONFIG.replace("models:\n", servers + "models:\n", 1)
        stack, chat_url = run.start_setup(workdir / "full", mock_port, POLICY + TENANT)
        stop.callback(stack.stop)
        base = chat_url.removesuffix("/v1/chat/completions")
        direct_chat = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
        session = initialize(base + "/mcp")
        rows = [
            ("straight to the server", f"http://127.0.0.1:{mock_port}/mcp", ACCEPT),
            ("through /mcp/demo", base + "/mcp/demo", ACCEPT),
            ("through /mcp (virtual)", base + "/mcp", {**ACCEPT, "mcp-session-id": session}),
        ]
        call_file = workdir / "call.json"
        call_file.write_text(json.dumps(CALL))
        chat_file = workdir / "chat.json"
        chat_file.write_bytes(run.chat_body(1024))
        for _, url, headers in rows:
            called(url, headers)
        groups = {name: run.tree(p.pid) for name, p in stack.processes.items()}
        groups["mcp"] = [mock.pid]
        for _ in range(run.ROUNDS):
            for label, url, headers in rows:
                measured = run.measure_cpu(url, call_file, groups, headers)
                assert not measured["errors"], f"{label}: {measured['errors']} errors"
                body = json.dumps(CALL).encode()
                measured.update(rate.fixed_rate(url, body, MCP_RATE, run.RATE_SECONDS, headers))
                results.setdefault(label, []).append(measured)
                print(f"{label}: {measured['rps']:,.0f}/s", flush=True)
            chat = run.measure(stack, mock, chat_url, chat_file)
            body = chat_file.read_bytes()
            chat.update(rate.fixed_rate(chat_url, body, MCP_RATE, run.RATE_SECONDS))
            straight = rate.fixed_rate(direct_chat, body, MCP_RATE, run.RATE_SECONDS)
            chat["straight_p50_ms"], chat["straight_p99_ms"] = (
                straight["p50_ms"],
                straight["p99_ms"],
            )
            results.setdefault("Chat Completions, 1 KB", []).append(chat)
    print(f"\nmachine: {run.machine()}")
    print(f"service CPU per call (median of rounds); latency at {MCP_RATE:.0f} calls/s")
    straight = run.median_of(results["straight to the server"])
    chat = run.median_of(results["Chat Completions, 1 KB"])
    for label, runs in results.items():
        median = run.median_of(runs)
        cpu = median["service_cpu_us"]
        line = f"  {label:28s} service {cpu:6.0f} µs ({cpu / chat['service_cpu_us']:4.2f}x chat)"
        floor = straight
        if label.startswith("Chat"):
            floor = {"p50_ms": chat["straight_p50_ms"], "p99_ms": chat["straight_p99_ms"]}
        added50 = median["p50_ms"] - floor["p50_ms"]
        added99 = median["p99_ms"] - floor["p99_ms"]
        line += (
            f"  p50 {median['p50_ms']:5.2f} ms (+{added50:4.2f})"
            f"  p99 {median['p99_ms']:5.2f} ms (+{added99:4.2f})"
        )
        print(line)


if __name__ == "__main__":
    main()
