"""`python bench/large_prompts.py`: what a 400 KB prompt costs through the full pipeline,
and what it does to the small requests flowing beside it.

Envoy alone and Envoy + the service with the demo policy, a token budget (in-process) and
accounting, each at a fixed rate (bench/rate.py, open loop):
- 1 KB chat requests at SMALL_RATE per second;
- 400 KB prompts at LARGE_RATE per second, in two shapes: an agent's turn (its
  conversation so far, ~100 messages, then a new message: every request a new body sharing
  the earlier ones' prefix) and a cold prompt (one 400 KB message never sent before);
- the 1 KB requests again while each shape of 400 KB prompt flows at the same time.

Printed: p50 and p99 of each, Envoy alone's beside the pipeline's, with the service's
request-body wait from Envoy's access log; medians of ROUNDS interleaved rounds. The
upstream answers every 400 KB request with one recorded answer (bench/upstream.py's
x-bench-answer): an agent turn's, ~2.4 KB, so a new body costs it nothing and the response
phase is the same for both shapes. Figures are printed, not asserted.
Environment: BENCH_ROUNDS (default 3), BENCH_RATE_SECONDS (10), BENCH_SMALL_RATE (100),
BENCH_LARGE_RATE (10), BENCH_WORKERS (the service's workers, default 1).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rate import Bodies, fixed_rate, fixed_rates  # noqa: E402
from bench.run import (  # noqa: E402
    POLICY,
    TENANT,
    chat_body,
    extproc_waits,
    machine,
    median_of,
    start_mock,
    start_setup,
    tree,
    tree_cpu,
    verdict,
)
from extproc.control.stack import Stack, free_port  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "10"))
SMALL_RATE = float(os.environ.get("BENCH_SMALL_RATE", "100"))
LARGE_RATE = float(os.environ.get("BENCH_LARGE_RATE", "10"))
SIZE = 400 * 1024
# The demo policy, a budget every request reserves in, and accounting (the default).
FULL = POLICY.replace("DIRS", "request").replace(
    "tenants: [{name: bench, policies: [demo]}]",
    "tenants:\n  - name: bench\n    policies: [demo]\n"
    "    budgets: [{name: daily, window: day, max_tokens: 1000000000000}]",
)
# The service's worker processes (`service.workers`): with 2, a stream waits only behind the
# work of the streams on its own worker. Budgets then need Redis: these runs have none.
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
if WORKERS > 1:
    PIPELINE = f"Envoy + extproc, demo policy, {WORKERS} workers"
    SETUPS = (("Envoy alone", "mock", TENANT), (PIPELINE, None, POLICY.replace("DIRS", "request")))
else:
    PIPELINE = "Envoy + extproc, demo policy + budget"
    SETUPS = (("Envoy alone", "mock", TENANT), (PIPELINE, None, FULL))
SHARED = {"x-bench-answer": "large"}
# English with a few non-ASCII characters, and nothing the demo policy blocks.
ENGLISH = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def english(size: int, start: int = 0) -> str:
    """About `size` characters of English, from character `start` on."""
    text = ENGLISH * (size // len(ENGLISH) + 2)
    start %= len(ENGLISH)
    return text[start : start + size]


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def agent_turn() -> Bodies:
    """An agent's conversation: a system prompt and ~100 earlier messages, the same for
    every request, then the request's own new message."""
    earlier = [{"role": "system", "content": english(8_000)}]
    for turn in range(98):
        role = "user" if turn % 2 == 0 else "assistant"
        earlier.append({"role": role, "content": english(4_000, 977 * turn)})
    head = _json({"model": "gpt-4o-mini", "messages": earlier})[: -len(b"]}")]
    news = [_json(english(2_000, 131 * k)) for k in range(16)]

    def body(index: int) -> bytes:
        # A new message each time: the index makes it one never sent before.
        text = b'"Turn %d. ' % index + news[index % len(news)][1:]
        return head + b', {"role": "user", "content": ' + text + b"}]}"

    return body


def cold_prompt() -> Bodies:
    """One 400 KB message, a different text every time."""
    texts = [_json(english(SIZE, 7_919 * k)) for k in range(8)]

    def body(index: int) -> bytes:
        text = b'"Request %d. ' % index + texts[index % len(texts)][1:]
        return b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ' + text + b"}]}"

    return body


Runs = dict[tuple[str, str], list[dict[str, float]]]


def measure(
    runs: Runs,
    label: str,
    stack: Stack,
    url: str,
    name: str,
    schedules: Sequence[tuple[Bodies, float, dict[str, str] | None]],
) -> None:
    """Run the schedules at once; the first one's latencies (and, alone, the service's
    waits from Envoy's access log) under (label, name)."""
    log = stack.workdir / "envoy.log"
    offset = log.stat().st_size
    service = stack.processes.get("service")
    pids = tree(service.pid) if service is not None else []
    cpu = tree_cpu(pids)
    results = fixed_rates([(url, b, r, h) for b, r, h in schedules], SECONDS)
    if len(schedules) == 1:
        results[0].update(extproc_waits(log, offset))
        if pids:  # the warm-up's 20 requests included
            requests = results[0]["requests"] + 20
            results[0]["service_cpu_us"] = (tree_cpu(pids) - cpu) / requests * 1e6
    runs.setdefault((label, name), []).append(results[0])
    print(f"{label} / {name}: {results[0]}", flush=True)


def main() -> None:
    one_kb = chat_body(1024)
    small: Bodies = lambda _: one_kb  # noqa: E731
    shapes = {"agent turn": agent_turn(), "cold prompt": cold_prompt()}
    runs: Runs = {}
    with tempfile.TemporaryDirectory(prefix="extproc-bench-") as tmp:
        workdir = Path(tmp)
        mock_port = free_port()
        mock = start_mock(mock_port, workdir)
        stacks: dict[str, tuple[Stack, str]] = {}
        try:
            # The one answer every 400 KB request gets: an agent turn's (~2.4 KB, echoing its
            # new message), recorded before anything else asks. A cold prompt's own answer
            # would echo all 400 KB back through the response phase.
            upstream = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
            fixed_rate(upstream, shapes["agent turn"](0), 20, 0.05, SHARED)
            for label, bare, tail in SETUPS:
                name = label.replace(" ", "-").replace(",", "").replace("+", "")
                workers = WORKERS if bare is None else 1
                stacks[label] = start_setup(workdir / name, mock_port, tail, bare, None, workers)
            for _ in range(ROUNDS):
                for label, (stack, url) in stacks.items():
                    measure(runs, label, stack, url, "1 KB", [(small, SMALL_RATE, None)])
                    for shape, bodies in shapes.items():
                        schedule = [(bodies, LARGE_RATE, SHARED)]
                        measure(runs, label, stack, url, f"400 KB, {shape}", schedule)
                    for shape, bodies in shapes.items():
                        both = [(small, SMALL_RATE, None), (bodies, LARGE_RATE, SHARED)]
                        measure(runs, label, stack, url, f"1 KB beside 400 KB, {shape}", both)
        finally:
            for stack, _ in stacks.values():
                stack.stop()
            mock.terminate()
            mock.wait()
    report(runs)


def targets(medians: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    """The performance issue's target 1 against this run: what a 400 KB request adds to
    the p50 beyond what a 1 KB one adds, and how far the 1 KB requests' p99 moves beside
    400 KB ones, each over Envoy alone (its floor) in the same run."""
    alone, full = (label for label, *_ in SETUPS)

    def added(name: str, key: str) -> float | None:
        if (alone, name) not in medians or (full, name) not in medians:
            return None
        return medians[(full, name)][key] - medians[(alone, name)][key]

    lines: list[str] = []
    for shape in ("agent turn", "cold prompt"):
        for target, name, key, bound, also in (
            (f"a 400 KB {shape}'s added p50 over a 1 KB request's", "400 KB", "p50_ms", 3, ""),
            (
                f"the 1 KB requests' p99 moved beside a 400 KB {shape}",
                "1 KB beside 400 KB",
                "p99_ms",
                1,
                " alone",
            ),
        ):
            large, small = added(f"{name}, {shape}", key), added("1 KB", key)
            if large is None or small is None:
                continue
            more = large - small
            lines.append(
                verdict(
                    f"1. {target}, <= {bound} ms",
                    more <= bound,
                    f"{more:+.2f} ms",
                    f"{large:+.2f} against {small:+.2f}{also}",
                )
            )
    return lines


def report(rows: Runs) -> None:
    print(f"\nmachine: {machine()}")
    print(f"fixed rates: 1 KB at {SMALL_RATE:.0f}/s, 400 KB at {LARGE_RATE:.0f}/s, {SECONDS:.0f} s")
    print(
        "| requests | Envoy alone p50 / p99 ms | pipeline p50 / p99 ms | added p50 / p99 ms "
        "| service's request-body wait p50 µs | service CPU µs/request |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    alone, full = (label for label, *_ in SETUPS)
    for name in dict.fromkeys(name for _, name in rows):
        a, f = median_of(rows[(alone, name)]), median_of(rows[(full, name)])
        wait, cpu = f.get("request_body_wait_us"), f.get("service_cpu_us")
        print(
            f"| {name} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | {f['p50_ms']:.2f} / "
            f"{f['p99_ms']:.2f} | {f['p50_ms'] - a['p50_ms']:+.2f} / "
            f"{f['p99_ms'] - a['p99_ms']:+.2f} | {'-' if wait is None else f'{wait:,.0f}'} | "
            f"{'-' if cpu is None else f'{cpu:,.0f}'} |"
        )
    verdicts = targets({key: median_of(runs) for key, runs in rows.items()})
    if verdicts:
        print("\nthe performance issue's target 1, over Envoy alone in the same run:")
        print("\n".join(verdicts))


if __name__ == "__main__":
    main()
