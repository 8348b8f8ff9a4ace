"""`python bench/pii_scan.py [SOURCE_TREE]`: what the built-in PII detectors cost per KB of
prompt, the phone detector alone and all of them, on a 1 KB and a 400 KB prompt; best of
5 runs, in-process, in µs per KB.

Texts: English prose with a contact line (a phone number, an e-mail address) and everyday
numbers (years, prices, percentages) in every KB, and service logs (timestamps, request
ids, durations, addresses, order numbers: a digit run every few characters). Every number
is drawn anew, so the phone detector's cache of verdicts does not help ("cold"); "warm" is
the same text scanned again. SOURCE_TREE measures another checkout's detectors (the code
before a change) on the same texts.
"""

from __future__ import annotations

import importlib
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_TEXT = """
the of and to in is that for it as with was on be by this are from at or an have not which
but all were when there can more if will one about up out them some would so other into has
time could than like then its only over also new after used two first way well because any
these give day most us review report meeting budget team
"""
WORDS = tuple(_TEXT.split())
PHONES = ("+1 {3}-{3}-{4}", "({3}) {3}-{4}", "+44 20 {4} {4}", "030 {4} {4}", "06 {2} {2} {2} {2}")


def _digits(rng: random.Random, count: int) -> str:
    return str(rng.randrange(1, 10)) + "".join(str(rng.randrange(10)) for _ in range(count - 1))


def _phone(rng: random.Random) -> str:
    shape = rng.choice(PHONES)
    return re.sub(r"\{(\d)\}", lambda m: _digits(rng, int(m.group(1))), shape)


def prose(size: int, rng: random.Random) -> str:
    parts: list[str] = []
    length = 0
    while length < size:
        block: list[str] = []
        while sum(len(w) + 1 for w in block) < 900:
            block.append(rng.choice(WORDS))
        block.insert(40, f"in {rng.randrange(1990, 2030)} at {rng.randrange(1, 99)}%")
        block.insert(80, f"costs ${rng.randrange(1, 999)}.{rng.randrange(10, 99)}")
        block.append(f"call {_phone(rng)} or write to someone{rng.randrange(999)}@example.com.")
        text = " ".join(block) + "\n"
        parts.append(text)
        length += len(text)
    return "".join(parts)[:size]


def logs(size: int, rng: random.Random) -> str:
    lines: list[str] = []
    length = 0
    while length < size:
        line = (
            f"2026-12-06T12:{rng.randrange(60):02}:{rng.randrange(60):02}.{rng.randrange(1000):03}Z"
            f" INFO request id={_digits(rng, 10)} user={_digits(rng, 7)} took"
            f" {rng.randrange(1, 999)}.{rng.randrange(10)} ms order INV-2026-{_digits(rng, 6)}"
            f" from 10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}\n"
        )
        lines.append(line)
        length += len(line)
    return "".join(lines)[:size]


def best(scan: Any, text: str, detectors: tuple[Any, ...], clear: Any, warm: bool) -> float:
    times = []
    for _ in range(5):
        clear()
        if warm:
            scan(text, detectors)
        started = time.perf_counter()
        scan(text, detectors)
        times.append(time.perf_counter() - started)
    return min(times) * 1e6 / (len(text) / 1024)


def main() -> None:
    tree = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    sys.path.insert(0, str(tree))
    detectors = importlib.import_module("extproc.policy.detectors")
    builtin = detectors.BUILTIN
    phone = builtin["phone"]
    cache = getattr(getattr(getattr(phone, "refine", None), "__self__", None), "_verdict", None)

    def clear() -> None:
        if cache is not None:
            cache.cache_clear()

    print(f"detectors from {tree}")
    print(f"{'text':18} {'phone, cold':>12} {'phone, warm':>12} {'all, cold':>10}  (µs per KB)")
    for name, make in (("prose", prose), ("logs", logs)):
        for size in (1024, 400 * 1024):
            text = make(size, random.Random(size))
            row = [
                best(detectors.scan, text, (phone,), clear, warm=False),
                best(detectors.scan, text, (phone,), clear, warm=True),
                best(detectors.scan, text, tuple(builtin.values()), clear, warm=False),
            ]
            label = f"{name}, {size // 1024} KB"
            print(f"{label:18} {row[0]:12.1f} {row[1]:12.1f} {row[2]:10.1f}")


if __name__ == "__main__":
    main()
