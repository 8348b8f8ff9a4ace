"""`python bench/ab.py TREE_A TREE_B [SETUP] [WORKLOAD]`: two trees through Envoy, in pairs.

On a shared VM the same setup's figures drift by tens of percent within minutes, more than
most changes move them, so two runs made one after the other say little. This measures
one setup and workload of bench/run.py (default: "Envoy + extproc, demo policy" and "1 KB")
for each tree in turn, AB_PAIRS times (default 8), each pair in the order ABBA..., so that
a drift over the run falls on both sides alike. Each measurement starts that tree's stack
(its own service, Envoy and upstream), warms it up and runs wrk for BENCH_SECONDS (default
6). The report gives each figure's median per tree and the median of the pairs'
differences (B against A), with how many pairs went each way.

With SETUP "large", WORKLOAD is one of bench/large_prompts.py's rows ("400 KB, cold
prompt", "1 KB beside 400 KB, agent turn", ...), through its full pipeline at its fixed
rates for BENCH_RATE_SECONDS (default 10): the p50 and p99 of the row's first requests
(the 1 KB ones beside 400 KB), and alone, the request-body wait and the service's CPU.

A tree is a folder holding the package (`git archive COMMIT | tar -x -C FOLDER`); its
bench/run.py is the one measured. Figures are printed, not asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PAIRS = int(os.environ.get("AB_PAIRS", "8"))
FIGURES = (
    "rps",
    "p50_ms",
    "p99_ms",
    "service_cpu_us",
    "envoy_cpu_us",
    "request_body_wait_us",
)
LOWER_IS_BETTER = set(FIGURES) - {"rps"}


def measure(tree: Path, setup: str, workload: str) -> dict[str, float]:
    """One measurement of `tree`, in a process of its own (the tree's modules only)."""
    result = subprocess.run(
        [sys.executable, "-P", __file__, "--one", str(tree), setup, workload],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{tree}: the measurement failed:\n{result.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(lines[-1])
    return figures


def one(tree: Path, setup: str, workload: str) -> None:
    """The measurement itself, run with `tree` first on the module path."""
    sys.path.insert(0, str(tree))
    if setup == "large":
        one_large(workload)
        return
    from bench import run  # the tree's own
    from extproc.control.stack import free_port

    tails = {label: (bare, command, tail) for label, bare, command, tail, _ in run.SETUPS}
    bare, command, tail = tails[setup]
    size, streamed, model = next((s, st, m) for w, s, st, m in run.WORKLOADS if w == workload)
    with tempfile.TemporaryDirectory(prefix="extproc-ab-") as tmp:
        workdir = Path(tmp)
        body = json.loads(run.chat_body(size))
        body["model"] = model
        if streamed:
            body["stream"] = True
        body_file = workdir / "body.json"
        body_file.write_text(json.dumps(body))
        mock_port = free_port()
        mock = run.start_mock(mock_port, workdir)
        stack, url = run.start_setup(workdir / "stack", mock_port, tail, bare, command)
        try:
            result = run.measure(stack, mock, url, body_file, run.headers_for(workload))
        finally:
            stack.stop()
            mock.terminate()
            mock.wait()
    events = run.stream_events(size) if "paced" in workload else 1
    for key in ("service_cpu_us", "envoy_cpu_us"):
        if key in result:
            result[key] /= events  # per event on a paced stream
    print(json.dumps({key: result[key] for key in FIGURES if key in result}))


def one_large(workload: str) -> None:
    """One row of bench/large_prompts.py (the tree's) through its full pipeline."""
    from bench import large_prompts as large
    from bench import run
    from bench.rate import Bodies, fixed_rate
    from extproc.control.stack import free_port

    one_kb = run.chat_body(1024)
    small: Bodies = lambda _: one_kb  # noqa: E731
    shapes = {"agent turn": large.agent_turn(), "cold prompt": large.cold_prompt()}
    schedule: list[tuple[Bodies, float, dict[str, str] | None]] = []
    if workload.startswith("1 KB"):
        schedule.append((small, large.SMALL_RATE, None))
    if "400 KB" in workload:
        shape = workload.rpartition(", ")[2]
        schedule.append((shapes[shape], large.LARGE_RATE, large.SHARED))
    with tempfile.TemporaryDirectory(prefix="extproc-ab-") as tmp:
        workdir = Path(tmp)
        mock_port = free_port()
        mock = run.start_mock(mock_port, workdir)
        try:
            upstream = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
            fixed_rate(upstream, shapes["agent turn"](0), 20, 0.05, large.SHARED)
            label, bare, tail = large.SETUPS[-1]  # the full pipeline
            stack, url = run.start_setup(workdir / "stack", mock_port, tail, bare)
            try:
                runs: dict[tuple[str, str], list[dict[str, float]]] = {}
                large.measure(runs, label, stack, url, workload, schedule)
            finally:
                stack.stop()
        finally:
            mock.terminate()
            mock.wait()
    result = runs[(label, workload)][0]
    print(json.dumps({key: result[key] for key in FIGURES if key in result}))


def report(a: Path, b: Path, runs: dict[str, list[dict[str, float]]]) -> None:
    print(f"A = {a}\nB = {b}\n{len(runs['A'])} pairs\n")
    print("| figure | A median | B median | B vs A, median of pairs | pairs where B is better |")
    print("|---|---:|---:|---:|---:|")
    for figure in FIGURES:
        if figure not in runs["A"][0]:
            continue
        left = [r[figure] for r in runs["A"]]
        right = [r[figure] for r in runs["B"]]
        changes = [(y - x) / x * 100 for x, y in zip(left, right, strict=True) if x]
        better = sum(
            (y < x) if figure in LOWER_IS_BETTER else (y > x)
            for x, y in zip(left, right, strict=True)
        )
        print(
            f"| {figure} | {statistics.median(left):,.2f} | {statistics.median(right):,.2f} |"
            f" {statistics.median(changes):+.1f} % | {better} of {len(left)} |"
        )


def main() -> None:
    if sys.argv[1] == "--one":
        one(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    a, b = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    setup = sys.argv[3] if len(sys.argv) > 3 else "Envoy + extproc, demo policy"
    workload = sys.argv[4] if len(sys.argv) > 4 else "1 KB"
    print(f"{setup} / {workload}, {PAIRS} pairs", flush=True)
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for pair in range(PAIRS):
        order = ("A", "B") if pair % 2 == 0 else ("B", "A")
        for side in order:
            figures = measure(a if side == "A" else b, setup, workload)
            runs[side].append(figures)
            print(f"  pair {pair + 1} {side}: {figures}", flush=True)
    report(a, b, runs)


if __name__ == "__main__":
    main()
