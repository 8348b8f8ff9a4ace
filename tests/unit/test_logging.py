"""JSON log lines: one object per line, ISO UTC timestamps, written once per loop turn."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from extproc.telemetry import logging


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "log"
    with path.open("w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        logging.configure(json=True)
        yield path
    structlog.reset_defaults()


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_lines_outside_a_loop_are_written_at_once(log_file: Path) -> None:
    before = dt.datetime.now(dt.UTC)
    structlog.get_logger("t").info("started", port=8080, secret_ref="env:X", ratio=0.5)
    [record] = lines(log_file)
    assert record["event"] == "started" and record["level"] == "info"
    assert record["port"] == 8080 and record["ratio"] == 0.5
    stamp = str(record["timestamp"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=1) <= parsed <= dt.datetime.now(dt.UTC)


def test_lines_of_one_loop_turn_leave_together_and_in_order(log_file: Path) -> None:
    log = structlog.get_logger("t")

    async def turn() -> list[int]:
        for index in range(3):
            log.info("exchange", index=index)
        seen_in_turn = len(lines(log_file))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return [seen_in_turn, len(lines(log_file))]

    assert asyncio.run(turn()) == [0, 3]
    # A thread without a loop writes at once, after what the loop had pending.
    thread = threading.Thread(target=lambda: log.warning("from_thread"))
    thread.start()
    thread.join()
    assert [r["event"] for r in lines(log_file)] == ["exchange"] * 3 + ["from_thread"]
    assert [r.get("index") for r in lines(log_file)][:3] == [0, 1, 2]


def test_lines_of_the_last_loop_turn_are_written_when_the_loop_stops(log_file: Path) -> None:
    async def last_words() -> None:
        structlog.get_logger("t").info("stopping")

    asyncio.run(last_words())
    assert [r["event"] for r in lines(log_file)] == ["stopping"]


RECORD = {
    "request_id": "r-1",
    "status": 200,
    "stream": False,
    "duration_ms": 1.25,
    "usage": {"input_tokens": 3, "estimated": ["output_tokens"], "cost": 1.5e-06},
    "policy": [{"policy": "demo", "count": 2}],
}


def _without_time(record: dict[str, object]) -> list[tuple[str, object]]:
    return [(k, v) for k, v in record.items() if k != "timestamp"]


def test_info_writes_the_line_structlog_writes(log_file: Path) -> None:
    structlog.contextvars.bind_contextvars(worker=1, shard=2)
    structlog.contextvars.unbind_contextvars("shard")  # left as a marker, not a value
    try:
        structlog.get_logger("extproc").info("exchange", **RECORD)
        logging.info("exchange", RECORD)
    finally:
        structlog.contextvars.clear_contextvars()
    through_structlog, direct = lines(log_file)
    # The same keys in the same order, the same values; the timestamps a moment apart.
    assert _without_time(direct) == _without_time(through_structlog)
    assert list(direct)[-3:] == ["worker", "level", "timestamp"] and direct["worker"] == 1
    assert str(direct["timestamp"]) >= str(through_structlog["timestamp"])


def test_info_follows_the_configured_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        logging.configure(json=True, level=30)  # warnings and up
        logging.info("exchange", RECORD)
        structlog.get_logger("t").warning("kept")
    structlog.reset_defaults()
    assert [r["event"] for r in lines(path)] == ["kept"]


def test_info_goes_through_structlog_once_it_is_configured_otherwise(log_file: Path) -> None:
    with structlog.testing.capture_logs() as captured:
        logging.info("exchange", RECORD)
    assert captured == [{**RECORD, "event": "exchange", "log_level": "info"}]
    assert lines(log_file) == []


def test_info_goes_through_structlog_once_it_is_reset(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    structlog.reset_defaults()
    logging.info("exchange", {"request_id": "r-2"})
    printed = capsys.readouterr().out
    assert "exchange" in printed and "r-2" in printed
    assert lines(log_file) == []


def test_timestamps_keep_their_leading_zeros(
    log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for nanoseconds in (1_700_000_000_000_042_999, 1_700_000_001_999_999_000):
        monkeypatch.setattr(logging.time, "time_ns", lambda n=nanoseconds: n)
        logging.info("exchange", RECORD)
        structlog.get_logger("t").info("started")
    stamps = [record["timestamp"] for record in lines(log_file)]
    assert stamps == ["2023-11-14T22:13:20.000042Z"] * 2 + ["2023-11-14T22:13:21.999999Z"] * 2
