"""`make bench-streams`: does the service's memory grow with the number of streams served?

A bare grpc.aio ext_proc grows by ~130 bytes per stream (~40 -> ~205 MB over 1.25 M
streams), in gRPC core's native memory. This runs the full pipeline (the demo policy and
accounting, as in `make bench`) for STREAMS_TOTAL requests (default 1,250,000: one ext_proc
stream each) with wrk, in slices of STREAMS_SLICE seconds (default 30), and prints the
service's and Envoy's resident memory after each slice. Growth is measured from the end of
the first slice (warm-up: allocator arenas, caches, the metrics' label sets).

Figures are printed, not asserted.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from extproc.control.stack import free_port  # noqa: E402

TOTAL = int(os.environ.get("STREAMS_TOTAL", "1250000"))
SLICE = int(os.environ.get("STREAMS_SLICE", "30"))


def rss_mb(pid: int) -> float:
    return run.memory_mb(pid)[0]


def main() -> None:
    print(run.machine())
    with tempfile.TemporaryDirectory(prefix="extproc-streams-") as tmp:
        workdir = Path(tmp)
        mock_port = free_port()
        mock = run.start_mock(mock_port, workdir)
        stack, url = run.start_setup(
            workdir / "full", mock_port, run.POLICY.replace("DIRS", "request")
        )
        body = workdir / "chat.json"
        body.write_bytes(run.chat_body(1024))
        service = stack.processes["service"].pid
        envoy = stack.processes["envoy"].pid
        started = time.monotonic()
        served, errors = 0, 0
        rows = [(0, rss_mb(service), rss_mb(envoy), 0.0)]
        try:
            while served < TOTAL:
                result = run.wrk(url, body, SLICE)
                served += int(result["requests"])
                errors += int(result["errors"])
                rows.append((served, rss_mb(service), rss_mb(envoy), result["rps"]))
                print(
                    f"{served:>10,} requests  service {rows[-1][1]:6.1f} MB"
                    f"  Envoy {rows[-1][2]:6.1f} MB  {result['rps']:,.0f}/s",
                    flush=True,
                )
        finally:
            stack.stop()
            mock.terminate()
            mock.wait()
    report(rows, errors, time.monotonic() - started)


def report(rows: list[tuple[int, float, float, float]], errors: int, seconds: float) -> None:
    warm, last = rows[1], rows[-1]
    streams = last[0] - warm[0]
    growth = last[1] - warm[1]
    print(
        f"\n{last[0]:,} requests in {seconds / 60:.1f} min, {errors} non-2xx."
        f"\nService RSS: {rows[0][1]:.1f} MB idle, {warm[1]:.1f} MB after {warm[0]:,}"
        f" (warm-up), {last[1]:.1f} MB at the end: {growth:+.1f} MB over {streams:,}"
        f" streams ({growth * 1024 * 1024 / max(streams, 1):.1f} bytes per stream)."
        f"\nEnvoy RSS: {warm[2]:.1f} -> {last[2]:.1f} MB."
    )


if __name__ == "__main__":
    main()
