"""Traffic capture and replay through a real Envoy."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from extproc.control.replay import replay
from tests.integration.conftest import GATEWAY_KEYS, PROVIDER_KEYS, Gateway

PROMPT = "Tell me about capture and replay, please."


def capture_files(gateway: Gateway) -> list[Path]:
    return sorted((gateway.stack.workdir / "capture").glob("traffic.jsonl*"))


def test_capture_rotates_holds_no_credential_and_replays(gateway: Gateway) -> None:
    client = gateway.openai()
    for number in range(12):
        client.chat.completions.create(
            model="captured-gpt",
            messages=[{"role": "user", "content": f"{PROMPT} #{number}"}],
            stream=number % 3 == 0,
        )
    last = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    gateway.record(last.headers["x-request-id"])  # written after every earlier capture
    files = capture_files(gateway)
    # Rotated at 6,000 bytes, two rotated files kept: bounded however much traffic flows.
    assert [f.name for f in files] == ["traffic.jsonl", "traffic.jsonl.1", "traffic.jsonl.2"]
    assert all(f.stat().st_size <= 6000 for f in files)
    text = b"".join(f.read_bytes() for f in files)
    for secret in (*GATEWAY_KEYS.values(), *PROVIDER_KEYS.values()):
        assert secret.encode() not in text
    records = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert {r["requested_model"] for r in records} == {"captured-gpt"}  # only the sampled model
    latest = [orjson.loads(line) for line in files[0].read_bytes().splitlines()]
    plain = next(r for r in latest if not r["stream"])
    assert plain["request"]["model"] == "gpt-4o-mini"  # as the provider saw it
    assert plain["response"]["usage"]["prompt_tokens"] > 0
    assert plain["usage"]["input_tokens"] == plain["response"]["usage"]["prompt_tokens"]
    streamed = [r for r in records if r["stream"]]
    assert streamed and all(isinstance(r["response"]["events"], list) for r in streamed)
    # Replaying the current file through the same gateway: nothing differs.
    out = io.StringIO()
    assert replay(files[0], gateway.url, api_key=GATEWAY_KEYS["team-a"], out=out) == 0
    assert out.getvalue().endswith(f"{len(latest)} replayed, 0 differ, 0 skipped\n")
    # A provider that now returns an extra field: replay reports it.
    out = io.StringIO()
    status = replay(
        files[0],
        gateway.url,
        api_key=GATEWAY_KEYS["team-a"],
        headers={"x-mock-extra-field": "safety_ratings"},
        out=out,
    )
    assert status == 1
    report = out.getvalue()
    assert "fields added: safety_ratings" in report
    assert f"{len(latest)} replayed" in report


def test_a_capture_that_cannot_be_written_loses_no_record(gateway: Gateway) -> None:
    """A rotation that fails (the oldest file cannot be removed: a directory stands in
    its place) drops only the captures: every exchange is still logged and counted, the
    failures are counted by cause and logged once, and capture resumes once it can."""
    client = gateway.openai()
    blocker = gateway.stack.workdir / "capture" / "traffic.jsonl.2"
    blocker.unlink(missing_ok=True)
    blocker.mkdir()
    failed_lines = gateway.service_log().count('"capture_failed"')
    errors = gateway.metric("extproc_capture_errors_total", cause="EISDIR")
    served = gateway.metric("extproc_requests_total", model="captured-gpt", status="200")
    try:
        # Each capture takes more than 750 bytes: 8 of them need a rotation at 6,000.
        ids = [
            client.chat.completions.with_raw_response.create(
                model="captured-gpt", messages=[{"role": "user", "content": f"{PROMPT} {n}"}]
            ).headers["x-request-id"]
            for n in range(8)
        ]
        assert all(gateway.record(request_id)["status"] == 200 for request_id in ids)
        assert gateway.metric("extproc_requests_total", model="captured-gpt", status="200") == (
            served + 8
        )
        captured = {
            orjson.loads(line)["request_id"]
            for path in capture_files(gateway)
            if path.is_file()
            for line in path.read_bytes().splitlines()
        }
        lost = [request_id for request_id in ids if request_id not in captured]
        assert lost and lost == ids[-len(lost) :]  # from the first rotation on
        assert gateway.metric("extproc_capture_errors_total", cause="EISDIR") == errors + len(lost)
        log = gateway.service_log()
        assert log.count('"capture_failed"') == failed_lines + 1
        assert '"cause":"EISDIR"' in log
    finally:
        blocker.rmdir()
    recovered = client.chat.completions.with_raw_response.create(
        model="captured-gpt", messages=[{"role": "user", "content": PROMPT}]
    ).headers["x-request-id"]
    gateway.record(recovered)
    gateway.wait_for_log('"capture_recovered"')
    newest = capture_files(gateway)[0].read_bytes().splitlines()
    assert [orjson.loads(line)["request_id"] for line in newest] == [recovered]
