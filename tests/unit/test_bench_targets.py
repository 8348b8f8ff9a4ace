"""`make bench`'s verdicts on the performance issue's targets 2-4 (bench/run.py's targets())."""

from __future__ import annotations

from tests.helpers import bench_script

run = bench_script("run")
EVENTS = run.stream_events(1024)


def row(rps: float = 0.0, service: float = 0.0, envoy: float = 0.0) -> dict[str, float]:
    return {"rps": rps, "service_cpu_us": service, "envoy_cpu_us": envoy}


def test_throughput_is_judged_against_each_bound_beside_its_floor() -> None:
    medians = {
        (run.FULL, "1 KB"): row(rps=5200, service=140, envoy=90),
        ("Envoy alone", "1 KB"): row(rps=20000, envoy=45),
        (run.BARE_H2_LABEL, "1 KB"): row(rps=9000, service=32, envoy=99),
    }
    lines = run.targets(medians, {})
    assert lines == [
        "- 2. requests/s of 1 KB, >= 5,000: 5,200"
        " (bare h2grpc ext_proc 9,000, Envoy alone 20,000): met",
        "- 2. service CPU per request, <= 130 µs: 140 µs (bare h2grpc ext_proc 32 µs): not met",
        "- 2. Envoy's CPU per request, <= 2x Envoy alone's: 2.00x (90 against 45 µs)"
        " (bare h2grpc ext_proc 2.20x): met",
    ]


def test_a_paced_event_costs_what_the_stream_adds_to_its_json_request() -> None:
    medians = {
        (run.ACCOUNTING, "1 KB"): row(service=200, envoy=150),
        (run.ACCOUNTING, run.PACED[0]): row(service=200 + 11.5 * EVENTS, envoy=150),
        (run.ACCOUNTING, run.TRANSLATED[0]): row(service=250, envoy=150),
        # The Anthropic stream carries three events more than the OpenAI one.
        (run.ACCOUNTING, run.PACED[1]): row(service=250 + 13 * (EVENTS + 3), envoy=150),
        (run.BARE_H2_LABEL, "1 KB"): row(service=30, envoy=100),
        (run.BARE_H2_LABEL, run.PACED[0]): row(service=30 + 6 * EVENTS, envoy=100),
    }
    lines = [line for line in run.targets(medians, {}) if line.startswith("- 3.")]
    assert lines == [
        "- 3. service CPU per paced event with accounting, <= 12 µs: 11.5 µs"
        " (bare h2grpc ext_proc 6.0 µs): met",
        "- 3. service CPU per paced event translated, <= 12 µs: 13.0 µs"
        " (bare h2grpc ext_proc 6.0 µs on OpenAI's): not met",
    ]


def test_first_byte_is_judged_over_the_bare_ext_proc() -> None:
    rated = {
        (run.FULL, "1 KB"): {"first_p50_ms": 2.0},
        (run.BARE_H2_LABEL, "1 KB"): {"first_p50_ms": 1.75},
        (run.FULL, run.SHORT_STREAM): {"first_p50_ms": 3.3},
        (run.BARE_H2_LABEL, run.SHORT_STREAM): {"first_p50_ms": 2.3},
    }
    assert run.targets({}, rated) == [
        "- 4. first byte p50 over the bare h2grpc ext_proc, JSON, <= +0.3 ms: +0.25 ms"
        " (bare 1.75 ms): met",
        "- 4. first byte p50 over the bare h2grpc ext_proc, a paced stream, <= +0.3 ms:"
        " +1.00 ms (bare 2.30 ms): not met",
    ]


def test_targets_whose_runs_are_missing_are_left_out() -> None:
    # BENCH_ONLY=rated measures no saturated rows; a run without the bare ext_proc has no
    # first-byte floor.
    assert run.targets({}, {}) == []
    assert run.targets({}, {(run.FULL, "1 KB"): {"first_p50_ms": 2.0}}) == []


large = bench_script("large_prompts")
fixed = bench_script("fixed_rate")
peers = bench_script("peers")


def latency(p50: float, p99: float) -> dict[str, float]:
    return {"p50_ms": p50, "p99_ms": p99}


def test_a_large_request_is_judged_by_what_it_adds_beyond_a_small_one() -> None:
    alone, full = (label for label, *_ in large.SETUPS)
    medians = {
        (alone, "1 KB"): latency(1.0, 3.0),
        (full, "1 KB"): latency(3.0, 6.0),  # adds +2.0 / +3.0
        (alone, "400 KB, cold prompt"): latency(2.0, 4.0),
        (full, "400 KB, cold prompt"): latency(6.5, 9.0),  # adds +4.5: 2.5 beyond 1 KB's
        (alone, "1 KB beside 400 KB, cold prompt"): latency(1.0, 3.0),
        (full, "1 KB beside 400 KB, cold prompt"): latency(3.0, 7.5),  # p99 +4.5: moved 1.5
    }
    assert large.targets(medians) == [
        "- 1. a 400 KB cold prompt's added p50 over a 1 KB request's, <= 3 ms: +2.50 ms"
        " (+4.50 against +2.00): met",
        "- 1. the 1 KB requests' p99 moved beside a 400 KB cold prompt, <= 1 ms: +1.50 ms"
        " (+4.50 against +3.00 alone): not met",
    ]
    del medians[(full, "1 KB")]
    assert large.targets(medians) == []


def test_the_fixed_rate_verdict_names_the_highest_rate_that_holds() -> None:
    alone, full = (label for label, *_ in fixed.SETUPS)
    held = {"errors": 0.0, "p99_ms": 10.0}
    behind = {"errors": 0.0, "p99_ms": 2_000.0}
    found = {(alone, 3000): [held], (full, 3000): [behind], (full, 2000): [behind]}
    assert fixed.target(found) == (
        "- 5. the full pipeline holds 3,000 requests/s: not met (no rate tried holds)"
    )
    found[(full, 1000)] = [held]
    assert fixed.target(found) == (
        "- 5. the full pipeline holds 3,000 requests/s: not met"
        " (the highest rate that holds: 1,000/s)"
    )
    found[(full, 3000)] = [held]
    assert fixed.target(found) == "- 5. the full pipeline holds 3,000 requests/s: met"
    assert fixed.target({(alone, 3000): [held]}) is None


def test_peers_are_judged_on_json_by_the_multiple_each_is_targeted_at() -> None:
    medians = {
        (peers.OURS, "1 KB"): {"rps": 1000.0},
        (peers.OURS, "1 KB, streamed"): {"rps": 200.0},
        ("Portkey gateway 1.15.2", "1 KB"): {"rps": 250.0},
        ("LiteLLM proxy 1.110.2", "1 KB"): {"rps": 10.0},
        ("LiteLLM proxy 1.110.2", "1 KB, streamed"): {"rps": 1.0},
        ("MLflow AI Gateway 3.18.0", "1 KB"): {"rps": 400.0},
    }
    assert peers.targets(medians) == [
        "- 7. >= 5x Portkey gateway 1.15.2's requests/s: 4.00x (1,000 against 250): not met",
        "- 7. >= 50x LiteLLM proxy 1.110.2's requests/s: 100.00x (1,000 against 10): met",
    ]
