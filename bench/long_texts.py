"""`python bench/long_texts.py [SOURCE_TREE]`: what a policy set's reading of one long
text costs, in process: the request policies (`evaluate_request`) on a 400 KB chat message
never sent before, and the tool-result policies (`scan_result`) on a 400 KB MCP tool
result; CPU time per text, the median and the best of REQUESTS (default 40) after 5 to
warm up.

The policy sets: the demo's (e-mail redaction, payment cards refused, one deny rule of two
keywords), the same with every built-in detector, and for tool results the deny rule and
every built-in detector. The text is the docs' architecture page (English, a few non-ASCII
characters, one e-mail address) from a different place each time. SOURCE_TREE measures
another checkout (the code before a change) on the same texts. Figures are printed, not
asserted.
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
        apply_to: [{apply_to}]
tenants: [{{name: t, policies: [demo]}}]
"""


def measure(tree: Path, detectors: list[str], apply_to: str) -> list[float]:
    loader = importlib.import_module("extproc.config.loader")
    engine = importlib.import_module("extproc.policy.engine")
    tools = importlib.import_module("extproc.policy.tools")
    apis = importlib.import_module("extproc.apis")
    pii = ", ".join(f"{{detector: {name}, apply_to: [{apply_to}]}}" for name in detectors)
    runtime = loader.load_text(CONFIG.format(detectors=pii, apply_to=apply_to))
    tenant = runtime.tenants["t"]
    policies = runtime.policy_set(tenant, runtime.models[0])
    tool_policies = runtime.tool_policies(tenant)
    kind = apis.ENDPOINTS["/v1/chat/completions"].body_kind
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    page *= SIZE // len(page) + 2

    def one(index: int) -> float:
        start = 7_919 * index % (len(page) - SIZE)
        text = f"Text {index}. {page[start : start + SIZE]}"
        redactions, decisions = engine.Redactions(), engine.Decisions()
        began = time.process_time()
        if apply_to == "request":
            body: dict[str, Any] = {"model": "gpt", "messages": [{"role": "user", "content": text}]}
            engine.evaluate_request(policies, kind, body, redactions, decisions)
        else:
            result = {"content": [{"type": "text", "text": text}]}
            tools.scan_result(tool_policies, result, redactions, decisions, max_depth=8)
        return time.process_time() - began

    for index in range(5):
        one(index)
    return [one(index) for index in range(5, 5 + REQUESTS)]


def main() -> None:
    tree = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    sys.path.insert(0, str(tree))
    print(f"tree: {tree}")
    rows = (
        ("a 400 KB prompt, the demo policy", DEMO, "request"),
        ("a 400 KB prompt, every built-in detector", EVERY, "request"),
        ("a 400 KB tool result, every built-in detector", EVERY, "tool_result"),
    )
    for label, detectors, apply_to in rows:
        times = measure(tree, detectors, apply_to)
        print(
            f"{label}: median {statistics.median(times) * 1e3:.2f} ms, "
            f"best {min(times) * 1e3:.2f} ms"
        )


if __name__ == "__main__":
    main()
