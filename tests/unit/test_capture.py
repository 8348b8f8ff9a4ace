"""Capture sampling and the rotating sink."""

from __future__ import annotations

import errno
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

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


def test_rates_name_servers_models_or_both_and_count_apart() -> None:
    sampler = Sampler(
        0.5,
        [
            Rate((), frozenset(), 1.0, (Glob("git*"),)),
            Rate((Glob("gpt-*"),), frozenset(), 0.0),
            Rate((), frozenset({"team-b"}), 0.25),
        ],
    )
    # A rule naming servers is for MCP requests alone, one naming models for exchanges.
    assert all(sampler.sample_mcp("github", "team-a") for _ in range(5))
    assert not any(sampler.sample("gpt-4o", "team-a") for _ in range(5))
    # One naming neither is for both; the default after that. The virtual server's own
    # answers are server "", which only "*" matches.
    assert sum(sampler.sample_mcp("", "team-b") for _ in range(8)) == 2
    assert sum(sampler.sample("claude", "team-b") for _ in range(8)) == 2
    assert sum(sampler.sample_mcp("docs", "team-a") for _ in range(10)) == 5
    assert Rate((), frozenset(), 1.0, (Glob("*"),)).applies_to_server("", "team-a")
    assert not Rate((), frozenset(), 1.0, (Glob("git*"),)).applies_to_server("", "team-a")
    # Exchanges and MCP requests at the same rate are counted apart: one in two of each.
    both = Sampler(0.5, [])
    taken = [(both.sample("m", "t"), both.sample_mcp("s", "t")) for _ in range(4)]
    assert sum(a for a, _ in taken) == 2 and sum(b for _, b in taken) == 2


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


def test_a_full_disk_drops_the_line_and_says_why() -> None:
    # /dev/full answers every write with ENOSPC, as a full filesystem does.
    sink = Sink("/dev/full", max_bytes=1000, max_files=0)
    assert sink.write({"n": 1}) == "ENOSPC"
    assert sink.write({"n": 2}) == "ENOSPC"
    sink.close()


# A sink under a file size limit (RLIMIT_FSIZE), in its own process: the line that crosses
# the limit is cut back out, the ones after it fail whole.
_LIMITED = """
import resource, sys
from extproc.capture import Sink
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sink = Sink(sys.argv[1], max_bytes=100_000, max_files=1)
print(",".join(str(sink.write({"n": n, "pad": "x" * 40})) for n in range(40)))
"""


def test_a_line_past_a_file_size_limit_leaves_no_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(path)], capture_output=True, check=True, text=True
    )
    causes = done.stdout.strip().split(",")
    lines = path.read_bytes().splitlines()
    assert causes == ["None"] * len(lines) + ["EFBIG"] * (40 - len(lines))
    assert 0 < len(lines) < 40 and path.stat().st_size <= 1000
    assert [orjson.loads(line)["n"] for line in lines] == list(range(len(lines)))


def test_a_rotation_that_fails_keeps_the_bound_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    sink = Sink(path, max_bytes=100, max_files=2)
    (tmp_path / "c.jsonl.2").mkdir()  # the oldest file cannot be removed: a directory
    causes = [sink.write({"n": n, "pad": "x" * 30}) for n in range(6)]
    # Two lines fit in the file; every line after them needs a rotation, which fails.
    assert causes == [None, None, "EISDIR", "EISDIR", "EISDIR", "EISDIR"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir() if p.is_file())
    (tmp_path / "c.jsonl.2").rmdir()
    assert sink.write({"n": 6, "pad": "x" * 30}) is None
    sink.close()
    assert [orjson.loads(line)["n"] for line in path.read_bytes().splitlines()] == [6]
    rotated = (tmp_path / "c.jsonl.1").read_bytes().splitlines()
    assert [orjson.loads(line)["n"] for line in rotated] == [0, 1]


def test_a_rotation_that_cannot_open_its_new_file_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.jsonl"
    sink = Sink(path, max_bytes=100, max_files=2)
    assert [sink.write({"n": n, "pad": "x" * 30}) for n in range(2)] == [None, None]

    def no_descriptor_left() -> io.FileIO:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(sink, "_open", no_descriptor_left)
    assert sink.write({"n": 2, "pad": "x" * 30}) == "EMFILE"
    assert sink.write({"n": 3, "pad": "x" * 30}) == "EMFILE"
    monkeypatch.undo()
    assert sink.write({"n": 4, "pad": "x" * 30}) is None
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "c.jsonl.1"]
    assert orjson.loads(path.read_bytes())["n"] == 4
    rotated = (tmp_path / "c.jsonl.1").read_bytes().splitlines()
    assert [orjson.loads(line)["n"] for line in rotated] == [0, 1]


class TakesNothing(io.FileIO):
    """A file that takes part of the first write, then no bytes (`taken` from write())."""

    def __init__(self, path: Path, taken: int | None) -> None:
        super().__init__(path, "ab")
        self.taken = taken
        self.calls = 0

    def write(self, data: memoryview) -> int | None:  # type: ignore[override]
        self.calls += 1
        assert self.calls < 100, "write() asked again and again after taking no bytes"
        if self.calls == 1:
            return super().write(data[:10])
        return self.taken


@pytest.mark.parametrize("taken", [0, None])
def test_a_file_that_takes_no_bytes_fails_the_line_instead_of_looping(
    tmp_path: Path, taken: int | None
) -> None:
    path = tmp_path / "c.jsonl"
    sink = Sink(path, max_bytes=1000, max_files=1)
    assert sink.write({"n": 0}) is None
    sink._file.close()
    sink._file = TakesNothing(path, taken)
    assert sink.write({"n": 1, "pad": "x" * 30}) == "EIO"
    assert sink._file.calls == 2
    assert path.read_bytes() == b'{"n":0}\n'  # the part it took is cut back out
    sink._file.close()
    sink._file = io.FileIO(path, "ab")
    assert sink.write({"n": 2}) is None
    sink.close()
    assert path.read_bytes() == b'{"n":0}\n{"n":2}\n'
