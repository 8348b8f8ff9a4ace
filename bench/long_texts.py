"""`python bench/long_texts.py [SOURCE_TREE]`: what a policy set's reading of one long
prompt costs, in process: the request policies (`evaluate_request`) on a 400 KB chat
message never sent before, CPU time per request, the median and the best of REQUESTS
(default 40) after 5 to warm up.

Two policy sets: the demo's (e-mail redaction, payment cards refused, one deny rule of two
keywords) and the same with every built-in detector. The text is the docs' architecture
page (English, a few non-ASCII characters, one e-mail address) from a different place for
each request. SOURCE_TREE measures another checkout (the code before a change) on the same
texts. Figures are printed, not asserted.
"""

from __future__ import annotations

import importlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = int(os.environ.get("REQUESTS", "40"))
SIZE = 400 * 1024
DEMO = ["email", "payment_card"]
EVERY = ["email", "payment_card", "iban", "us_ssn", "ip_address", "phone", "secret"]
CONFIG = """
backends: [{{name: openai, url: "http://127.0.0.1:9/v1"}}]
models: [{{name: gpt, routes: [{{backend: openai}}]}}]
policies:
  - name: demo
    pii: [{detectors}]
    deny:
      - name: prompt-injection
        keywords: ["ignore previous instructions", "ignore all previous instructions"]
        roles: [user]
tenants: [{{name: t, policies: [demo]}}]
"""


def measure(tree: Path, detectors: list[str]) -> list[float]:
    loader = importlib.import_module("extproc.config.loader")
    engine = importlib.import_module("extproc.policy.engine")
    apis = importlib.import_module("extproc.apis")
    pii = ", ".join(f"{{detector: {name}}}" for name in detectors)
    runtime = loader.load_text(CONFIG.format(detectors=pii))
    policies = runtime.policy_set(runtime.tenants["t"], runtime.models[0])
    kind = apis.ENDPOINTS["/v1/chat/completions"].body_kind
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    page *= SIZE // len(page) + 2

    def one(index: int) -> float:
        start = 7_919 * index % (len(page) - SIZE)
        content = f"Request {index}. {page[start : start + SIZE]}"
        body: dict[str, Any] = {"model": "gpt", "messages": [{"role": "user", "content": content}]}
        began = time.process_time()
        engine.evaluate_request(policies, kind, body, engine.Redactions(), engine.Decisions())
        return time.process_time() - began

    for index in range(5):
        one(index)
    return [one(index) for index in range(5, 5 + REQUESTS)]


def main() -> None:
    tree = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    sys.path.insert(0, str(tree))
    print(f"tree: {tree}")
    for label, detectors in (("demo policy", DEMO), ("every built-in detector", EVERY)):
        times = measure(tree, detectors)
        print(
            f"{label}: a cold 400 KB prompt, median {statistics.median(times) * 1e3:.2f} ms, "
            f"best {min(times) * 1e3:.2f} ms"
        )


if __name__ == "__main__":
    main()
