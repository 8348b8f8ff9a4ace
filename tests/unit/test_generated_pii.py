"""The built-in detectors on a corpus generated afresh each run (tests/generated_pii.py):
recall per detector, look-alikes reported as phones or cards, and streamed output split at
every position. The seed is printed; PII_SEED=<seed> replays a run."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from extproc.policy.detectors import BUILTIN, scan
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.filters import TextGuard
from extproc.policy.rules import PolicySet
from tests.generated_pii import LOCALES, Sample, corpus, seed, without_extension
from tests.helpers import runtime

SEED = seed()
POSITIVES, LOOKALIKES = corpus(SEED, per_locale=100)
DETECTORS = tuple(BUILTIN.values())
MIN_RECALL = 0.95
MAX_LOOKALIKE_RATE = 0.01

RESPONSES = runtime(
    """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
policies:
  - name: all
    pii:
"""
    + "".join(f"      - {{detector: {name}, apply_to: [response]}}\n" for name in BUILTIN)
    + "tenants: [{name: t, policies: [all]}]\n"
)
POLICIES: PolicySet = RESPONSES.policy_set(RESPONSES.tenants["t"], RESPONSES.models[0])


def found(sample: Sample) -> list[str]:
    """What the sample's detector reports in its text."""
    findings = scan(sample.text, DETECTORS)
    return [sample.text[f.start : f.end] for f in findings if f.detector.name == sample.detector]


def hit(sample: Sample, values: list[str]) -> bool:
    return sample.value in values or without_extension(sample.value) in values


def test_generated_corpus_recall_and_lookalikes(capsys: pytest.CaptureFixture[str]) -> None:
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    misses: dict[str, list[str]] = defaultdict(list)
    for sample in POSITIVES:
        values = found(sample)
        totals[sample.detector] += 1
        if hit(sample, values):
            hits[sample.detector] += 1
        else:
            misses[sample.detector].append(f"{sample.source}: {sample.value!r} -> {values}")
    reported: Counter[str] = Counter()
    wrong = []
    for sample in LOOKALIKES:
        names = {f.detector.name for f in scan(sample.text, DETECTORS)}
        for name in names & {"phone", "payment_card"}:
            reported[name] += 1
            wrong.append(f"{sample.source}: {sample.value!r} as {name}")
    with capsys.disabled():
        print(f"\nPII_SEED={SEED}: {len(POSITIVES)} values in {len(LOCALES)} locales")
        print("detector        recall   (found/values)")
        for name, total in totals.items():
            print(f"{name:15} {hits[name] / total:6.3f}   ({hits[name]}/{total})")
            for miss in misses[name][:5]:
                print("  missed", miss)
        print(
            f"look-alikes: {len(LOOKALIKES)}; reported as phone {reported['phone']},"
            f" as card {reported['payment_card']}"
        )
        for line in wrong[:10]:
            print("  reported", line)
    assert set(totals) == set(BUILTIN) - {"secret"}
    for name, total in totals.items():
        assert hits[name] / total >= MIN_RECALL, f"{name} (PII_SEED={SEED})"
    for name in ("phone", "payment_card"):
        assert reported[name] / len(LOOKALIKES) <= MAX_LOOKALIKE_RATE, f"{name} (PII_SEED={SEED})"


def streamed(pieces: list[str]) -> str:
    """Text streamed in pieces through a response filter redacting every detector."""
    guard = TextGuard(POLICIES, Redactions(), Decisions())
    out = [guard.feed(piece)[0] for piece in pieces[:-1]]
    out.append(guard.feed(pieces[-1], final=True)[0])
    return "".join(out)


def _streamed_samples() -> list[Sample]:
    """One value per detector and locale, and a look-alike of each kind."""
    chosen: dict[tuple[str, str], Sample] = {}
    for sample in POSITIVES:
        chosen.setdefault((sample.detector, sample.source.split()[0]), sample)
    for sample in LOOKALIKES:
        chosen.setdefault(("", sample.source.split(" ", 1)[1]), sample)
    return list(chosen.values())


def test_generated_corpus_streamed_split_at_every_position() -> None:
    for sample in _streamed_samples():
        text = sample.text
        whole = streamed([text])
        if sample.detector and hit(sample, found(sample)):
            assert without_extension(sample.value) not in whole, (sample, SEED)
        for cut in range(1, len(text)):
            assert streamed([text[:cut], text[cut:]]) == whole, (sample, cut, SEED)
        assert streamed(list(text)) == whole, (sample, SEED)
