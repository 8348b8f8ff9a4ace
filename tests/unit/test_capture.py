"""Capture sampling and the rotating sink."""

from __future__ import annotations

from pathlib import Path

from extproc.capture import Rate, Sampler, Sink, truncated
from extproc.glob import Glob


def test_rates_by_model_and_tenant_are_exact_shares() -> None:
    sampler = Sampler(
        0.0,
        [
            Rate((Glob("gpt-*"),), frozenset({"team-a"}), 0.25),
            Rate((), frozenset({"team-b"}), 1.0),
        ],
    )
    assert sum(sampler.sample("gpt-4o", "team-a") for _ in range(100)) == 25
    assert all(sampler.sample("claude", "team-b") for _ in range(10))
    assert not any(sampler.sample("claude", "team-a") for _ in range(10))


def test_sink_rotates_within_its_bound(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "c.jsonl", max_bytes=100, max_files=2)
    for number in range(20):
        sink.write({"n": number, "pad": "x" * 30})
    sink.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.jsonl", "c.jsonl.1", "c.jsonl.2"]
    assert all((tmp_path / n).stat().st_size <= 100 for n in names)
    assert b'"n":19' in (tmp_path / "c.jsonl").read_bytes()


def test_large_or_odd_bodies() -> None:
    assert truncated(b'{"a": 1}', 100) == {"a": 1}
    assert truncated(b"x" * 200, 100) == {"truncated": True, "bytes": 200}
    assert truncated(b"not json", 100) == {"text": "not json"}
