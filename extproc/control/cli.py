"""Command line: serve | envoy | inject | check-config | render-envoy | probe | drain | up |
replay | mock-provider | mcp-demo."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from extproc.config.loader import ConfigError, load_file


def _load(path: str, *, resolve_secrets: bool = True):  # type: ignore[no-untyped-def]
    try:
        return load_file(path, resolve_secrets=resolve_secrets)
    except ConfigError as error:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from extproc.telemetry import logging

    logging.configure()
    runtime = _load(args.config)
    if runtime.service.workers > 1:
        # Before anything imports prometheus_client (it picks multiprocess mode then).
        from extproc.control.supervisor import supervise

        return supervise(runtime, Path(args.config))
    from extproc.control.process import run

    return run(runtime, config_path=Path(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    runtime = _load(args.config, resolve_secrets=not args.skip_secrets)
    print(
        f"{args.config}: ok ({len(runtime.backends)} backends, {len(runtime.models)} models, "
        f"{len(runtime.tenants)} tenants)"
    )
    return 0


def cmd_render_envoy(args: argparse.Namespace) -> int:
    from extproc.control.render import render_yaml

    text = render_yaml(_load(args.config, resolve_secrets=False))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_envoy(args: argparse.Namespace) -> int:
    """Render the bootstrap for a config into the work directory, then become Envoy (the
    Envoy container of a pod runs this: signals reach Envoy itself)."""
    from extproc.control.render import render_yaml
    from extproc.control.stack import envoy_binary

    text = render_yaml(_load(args.config, resolve_secrets=False))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bootstrap = workdir / "envoy.yaml"
    bootstrap.write_text(text)
    argv = [
        envoy_binary(),
        "-c",
        str(bootstrap),
        "--disable-hot-restart",
        # Access log lines (with each request's usage) are written within a second.
        "--file-flush-interval-msec",
        "1000",
        *args.envoy_args,
    ]
    sys.stdout.flush()
    os.execv(argv[0], argv)  # noqa: S606 (a fixed binary, an argument list)


def cmd_inject(args: argparse.Namespace) -> int:
    from extproc.control.inject import InjectorConfig, InjectorConfigError, serve

    try:
        config = InjectorConfig.load(Path(args.config))
    except (OSError, InjectorConfigError, ValueError) as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    serve(
        config,
        host=args.host,
        port=args.port,
        cert_file=Path(args.tls_cert),
        key_file=Path(args.tls_key),
    )
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """GET a URL until it answers 2xx, or a grpc://host:port until its gRPC health says
    SERVING, or the wait is over (hooks, helm tests)."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None

    def check() -> tuple[bool, str]:
        """Whether the target is up, and what it answered."""
        if args.url.startswith("grpc://"):
            from extproc.control.stack import grpc_serving  # gRPC only when asked for

            try:
                serving = grpc_serving(args.url[len("grpc://") :])
            except Exception as error:  # grpc.RpcError and connection failures alike
                return False, type(error).__name__
            return serving, "SERVING" if serving else "not serving"
        try:
            with urllib.request.urlopen(args.url, timeout=5, context=context) as response:  # noqa: S310
                return True, str(response.status)
        except urllib.error.HTTPError as error:
            return error.code in (args.accept or ()), f"HTTP {error.code}"
        except (OSError, ValueError) as error:
            return False, str(error)

    deadline = time.monotonic() + args.wait
    while True:
        up, outcome = check()
        if up:
            print(f"{args.url}: {outcome}")
            return 0
        if time.monotonic() >= deadline:
            print(f"{args.url}: {outcome}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def cmd_drain(args: argparse.Namespace) -> int:
    """Let Envoy finish what it serves before it is stopped (a pod's preStop hook): fail
    its readiness, drain its listeners, wait until no request is active."""
    import json
    import urllib.request

    admin = args.admin.rstrip("/")
    if not admin.startswith(("http://", "https://")):
        print(f"drain: --admin must be an http(s) URL, not {admin!r}", file=sys.stderr)
        return 2

    def post(path: str) -> None:
        request = urllib.request.Request(f"{admin}{path}", method="POST", data=b"")  # noqa: S310
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass

    def active() -> int:
        url = f"{admin}/stats?format=json&filter=downstream_rq_active$"
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310
            stats = json.load(reply)["stats"]
        # Not the admin interface's own: this very request is active there.
        return sum(
            int(s.get("value", 0))
            for s in stats
            if s["name"].startswith("http.") and not s["name"].startswith("http.admin.")
        )

    post("/healthcheck/fail")  # readiness answers 503: endpoints are withdrawn
    post("/drain_listeners?graceful")  # connections are asked to close after their request
    deadline = time.monotonic() + args.timeout
    while (left := active()) > 0:
        if time.monotonic() >= deadline:
            print(f"drain: {left} requests still active after {args.timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print("drain: no request active")
    return 0


def cmd_mock_provider(args: argparse.Namespace) -> int:
    from extproc.devtools.mock_provider import run

    run(args.host, args.port, cert_file=args.tls_cert, key_file=args.tls_key)
    return 0


def cmd_mcp_demo(args: argparse.Namespace) -> int:
    try:
        from extproc.devtools.mcp_demo import run
    except ImportError as error:
        # The image installs the package without its `demo` extra.
        if (error.name or "").split(".")[0] not in ("mcp", "starlette"):
            raise
        print("mcp-demo needs the MCP SDK: pip install 'extproc[demo]'", file=sys.stderr)
        return 1
    run(args.host, args.port, json_response=args.json, stateless=args.stateless)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from extproc.control.stack import Stack

    runtime = _load(args.config, resolve_secrets=False)
    # The demo MCP server needs the `demo` extra (`make run` installs it).
    demo = not args.no_mcp_demo and importlib.util.find_spec("mcp") is not None
    with tempfile.TemporaryDirectory(prefix="extproc-up-") as workdir:
        stack = Stack(
            config_path=Path(args.config),
            workdir=Path(workdir),
            mock_port=None if args.no_mock else args.mock_port,
            mcp_demo_port=args.mcp_demo_port if demo else None,
            log_to_files=False,
        )
        stack.start()
        listener = runtime.listener
        scheme = "https" if listener.tls else "http"
        gateway = f"{scheme}://{listener.address}:{listener.port}"
        print(
            f"\nextproc is up.\n"
            f"  gateway      {gateway}  (OpenAI API under /v1, Anthropic /v1/messages)\n"
            f"  envoy admin  http://{runtime.admin.address}:{runtime.admin.port}\n"
            f"  metrics      http://{runtime.service.metrics_address}/metrics\n"
            f"  models       curl {gateway}/v1/models\n"
            + (f"  demo MCP     http://127.0.0.1:{args.mcp_demo_port}/mcp\n" if demo else "")
            + "Press Ctrl-C to stop.\n",
            flush=True,
        )
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while not stopping and all(p.poll() is None for p in stack.processes.values()):
                time.sleep(0.2)
        finally:
            statuses = stack.stop()
    failed = {
        name: code
        for name, code in statuses.items()
        if code not in (0, -signal.SIGTERM, -signal.SIGINT)
    }
    if failed and not stopping:
        print(f"stopped because a process exited: {failed}", file=sys.stderr)
        return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from extproc.control.replay import replay

    headers = {}
    for header in args.header or ():
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    return replay(Path(args.capture), args.url, api_key=args.api_key, headers=headers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extproc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ext_proc gRPC service")
    serve.add_argument("config")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser(
        "check-config", help="validate a config file; non-zero exit on any problem"
    )
    check.add_argument("config")
    check.add_argument(
        "--skip-secrets", action="store_true", help="do not read credential env vars and files"
    )
    check.set_defaults(func=cmd_check_config)

    render = commands.add_parser("render-envoy", help="write the Envoy bootstrap for a config")
    render.add_argument("config")
    render.add_argument("-o", "--output", help="file to write (default: stdout)")
    render.set_defaults(func=cmd_render_envoy)

    envoy = commands.add_parser(
        "envoy",
        help="render the Envoy bootstrap for a config and run Envoy with it "
        "(Envoy's own options follow --)",
    )
    envoy.add_argument("config")
    envoy.add_argument("--workdir", default="/tmp", help="where the bootstrap is written")
    envoy.set_defaults(func=cmd_envoy, envoy_args=[])

    inject = commands.add_parser(
        "inject", help="serve the sidecar injector (Kubernetes admission webhook, HTTPS)"
    )
    inject.add_argument("config", help="the injector config (YAML)")
    inject.add_argument("--host", default="0.0.0.0")
    inject.add_argument("--port", type=int, default=8443)
    inject.add_argument("--tls-cert", required=True)
    inject.add_argument("--tls-key", required=True)
    inject.set_defaults(func=cmd_inject)

    probe = commands.add_parser(
        "probe", help="GET a URL (or gRPC health of grpc://host:port) until up; exit 1 if not"
    )
    probe.add_argument("url")
    probe.add_argument("--wait", type=float, default=60.0, help="seconds to keep trying")
    probe.add_argument(
        "--accept", type=int, action="append", help="a non-2xx status that also counts as up"
    )
    probe.add_argument("--ca-file", help="CA bundle for an https URL")
    probe.set_defaults(func=cmd_probe)

    drain = commands.add_parser(
        "drain", help="fail Envoy's readiness, drain it, wait for active requests to finish"
    )
    drain.add_argument("--admin", default="http://127.0.0.1:9901", help="Envoy's admin URL")
    drain.add_argument("--timeout", type=float, default=25.0, help="seconds to wait at most")
    drain.set_defaults(func=cmd_drain)

    mock = commands.add_parser(
        "mock-provider", help="run the OpenAI/Anthropic-compatible mock provider"
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8001)
    mock.add_argument("--tls-cert")
    mock.add_argument("--tls-key")
    mock.set_defaults(func=cmd_mock_provider)

    demo = commands.add_parser("mcp-demo", help="run the demo MCP server (Streamable HTTP at /mcp)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8002)
    demo.add_argument(
        "--json", action="store_true", help="answer requests with JSON instead of SSE streams"
    )
    demo.add_argument(
        "--stateless", action="store_true", help="no sessions: every request stands alone"
    )
    demo.set_defaults(func=cmd_mcp_demo)

    again = commands.add_parser(
        "replay",
        help="re-send captured requests (LLM and MCP) through a gateway and report differences",
    )
    again.add_argument("capture", help="a capture file (JSON lines)")
    again.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:10000")
    again.add_argument("--api-key", help="the gateway key to send (default: none)")
    again.add_argument("--header", action="append", help="an extra header, NAME:VALUE")
    again.set_defaults(func=cmd_replay)

    up = commands.add_parser(
        "up", help="run Envoy + service (+ mock provider, demo MCP server) in the foreground"
    )
    up.add_argument("config")
    up.add_argument("--mock-port", type=int, default=8001)
    up.add_argument("--no-mock", action="store_true", help="do not start the mock provider")
    up.add_argument("--mcp-demo-port", type=int, default=8002)
    up.add_argument("--no-mcp-demo", action="store_true", help="do not start the demo MCP server")
    up.set_defaults(func=cmd_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `extproc envoy CONFIG [options] -- ENVOY OPTIONS`: what follows -- is Envoy's.
    passed: list[str] = []
    if argv and argv[0] == "envoy" and "--" in argv:
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if passed:
        args.envoy_args = passed
    return int(args.func(args))
