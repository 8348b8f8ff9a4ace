"""`python bench/config_load.py [SOURCE_DIR]`: what loading a config costs, as at start-up
and on every reload.

Cold: a fresh interpreter importing the loader and loading examples/demo.yaml (median of 7
processes). Warm: one load of an already imported loader (median of 30; of 5 for the large
config). Configs: the two examples, the tests' base config, and 300 models with 200 tenants.
SOURCE_DIR runs the same against another checkout of the package (to compare commits).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 and sys.argv[1] != "cold" else ROOT
sys.path.insert(0, str(SOURCE))
os.environ.setdefault("TEST_OPENAI_KEY", "sk-bench")
os.environ.setdefault("TEST_ANTHROPIC_KEY", "sk-bench")

COLD = f"""
import sys, time
sys.path.insert(0, {str(SOURCE)!r})
start = time.perf_counter()
from extproc.config import load_file
load_file({str(ROOT / "examples/demo.yaml")!r}, resolve_secrets=False)
print(time.perf_counter() - start)
"""


def large() -> str:
    lines = ["backends:"]
    lines += [
        f"  - {{name: b{i}, url: 'https://p{i}.test/v1', credential: {{env: TEST_OPENAI_KEY}}}}"
        for i in range(20)
    ]
    lines.append("models:")
    lines += [
        f"  - {{name: m{i}, aliases: [a{i}], routes: [{{backend: b{i % 20}, weight: 2}},"
        f" {{backend: b{(i + 1) % 20}}}], fallbacks: [{{backend: b{(i + 2) % 20}}}]}}"
        for i in range(300)
    ]
    lines.append("tenants:")
    lines += [
        f"  - {{name: t{i}, api_key_sha256: ['{i:064x}'], models: ['m*'],"
        " budgets: [{name: d, window: day, max_tokens: 1000}]}"
        for i in range(200)
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from extproc.config import load_text
    from tests.helpers import BASE_CONFIG

    colds = [
        float(subprocess.check_output([sys.executable, "-c", COLD], text=True)) for _ in range(7)
    ]
    print(f"cold, examples/demo.yaml: {statistics.median(colds) * 1000:.0f} ms")
    configs = {
        "examples/demo.yaml": ((ROOT / "examples/demo.yaml").read_text(), 30),
        "examples/sidecar.yaml": ((ROOT / "examples/sidecar.yaml").read_text(), 30),
        "tests' base config": (BASE_CONFIG, 30),
        "300 models, 200 tenants": (large(), 5),
    }
    for name, (text, runs) in configs.items():
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            load_text(text, base_dir=ROOT / "examples", resolve_secrets=False)
            times.append(time.perf_counter() - start)
        print(f"warm, {name}: {statistics.median(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
