"""`python bench/request_path.py`: what the request-body path holds the event loop for, by
body shape, up to the default 32 MiB limit; best of 3 runs, in-process.

Each stage on its own: parse (orjson), validate (the endpoint's table), policy (a deny
rule, e-mail redaction and `max_prompt_tokens`), the budget's first reservation's prompt
bound (at most QUICK_READ bytes of texts of 1,024 characters or more tokenized; the exact
bound a refused one asks for costs what the estimate does), the usage record's prompt
estimate (computed only when a provider reports no input), and the whole
`Exchange.request_body` of a tenant with that policy and a budget (all of them but the
estimate, plus routing and forwarding), and the longest part of it the event loop runs in
one piece (a large body's policies read it in slices, pausing in between). Shapes: the
worst a client can send within the validation bounds, an agent-shaped request and a 1 KB
chat.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from extproc import tokens  # noqa: E402
from extproc.accounting.usage import prompt_bounding, prompt_estimate  # noqa: E402
from extproc.apis import ENDPOINTS, Kind  # noqa: E402
from extproc.apis.validation import validate  # noqa: E402
from extproc.config.loader import load_text  # noqa: E402
from extproc.dataplane.budget import QUICK_READ  # noqa: E402
from extproc.dataplane.decisions import RESUMED, Continue, Pause, Reply, Reserve  # noqa: E402
from extproc.dataplane.exchange import Exchange  # noqa: E402
from extproc.policy import engine  # noqa: E402
from extproc.policy.engine import Decisions, Redactions, evaluate_request  # noqa: E402
from extproc.slices import finish  # noqa: E402

MIB = 1 << 20
LIMIT = 32 * MIB
# Two models, one on an OpenAI backend and one on an Anthropic one (no upstream listens).
MODELS = """
backends:
  - {name: openai, url: "http://127.0.0.1:9/v1"}
  - {name: anthropic, schema: anthropic, url: "http://127.0.0.1:9/v1"}
models:
  - {name: gpt, routes: [{backend: openai}]}
  - {name: claude, routes: [{backend: anthropic}]}
"""
CONFIG = (
    MODELS
    + """policies:
  - name: guard
    deny: [{name: weapons, keywords: ["build a bomb"]}]
    pii: [{detector: email}]
    limits: {max_prompt_tokens: 200000}
tenants:
  - name: team
    api_key_sha256: ["5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"]
    policies: [guard]
    budgets: [{name: day, window: day, max_tokens: 1000000000000}]
"""
)
KEY = "password"  # its sha256 above
RUNTIME = load_text(CONFIG)
ENGLISH = (ROOT / "README.md").read_text(encoding="utf-8")


def english(size: int) -> str:
    """`size` UTF-8 bytes of English (this README, repeated)."""
    data = ENGLISH.encode()
    return (data * (size // len(data) + 1))[:size].decode(errors="ignore")


def random_text(size: int) -> str:
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-'\"()"
    return "".join(rng.choices(alphabet, k=size))


def chat(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt", "messages": messages, **fields}


def agent() -> dict[str, Any]:
    """A coding agent's turn: 30 messages (system, user, 14 tool calls and results) and
    20 tools with JSON Schema parameters, ~15 KB."""

    def tool(i: int) -> dict[str, Any]:
        parameters = {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "file path"},
                "line": {"type": "integer"},
                "flags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["path"],
        }
        description = "Does a thing with the repository " * 3
        function = {"name": f"tool_{i}", "description": description, "parameters": parameters}
        return {"type": "function", "function": function}

    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent. " * 20},
        {"role": "user", "content": "Fix the failing test in the repo please."},
    ]
    for i in range(14):
        arguments = '{"path": "src/main.py", "line": 10}'
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "t", "arguments": arguments},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "x = 1\n" * 40})
    return chat(messages, tools=[tool(i) for i in range(20)], tool_choice="auto", stream=True)


def one_char_parts() -> dict[str, Any]:
    part = {"type": "text", "text": "a"}
    return chat([{"role": "user", "content": [part] * 100_000}] * 11)


def tool_uses() -> dict[str, Any]:
    use = {"type": "tool_use", "id": "t", "name": "f", "input": {"q": "a"}}
    return {
        "model": "claude",
        "max_tokens": 16,
        "messages": [{"role": "assistant", "content": [use] * 100_000}] * 5,
    }


def many_messages() -> dict[str, Any]:
    turn = {"role": "user", "content": english(300)}
    return {"model": "claude", "max_tokens": 16, "messages": [turn] * 100_000}


SHAPES: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
    (
        "1 KB chat",
        "/v1/chat/completions",
        lambda: chat([{"role": "user", "content": english(900)}]),
    ),
    ("agent: 30 msgs, 20 tools", "/v1/chat/completions", agent),
    (
        "400 KB English prompt",
        "/v1/chat/completions",
        lambda: chat([{"role": "user", "content": english(400 * 1024)}]),
    ),
    ("1.1M one-char parts", "/v1/chat/completions", one_char_parts),
    ("500k tool_use blocks", "/v1/messages", tool_uses),
    ("100k messages", "/v1/messages", many_messages),
    (
        "31 MiB English prompt",
        "/v1/chat/completions",
        lambda: chat([{"role": "user", "content": english(31 * MIB)}]),
    ),
    (
        "31 MiB random prompt",
        "/v1/chat/completions",
        lambda: chat([{"role": "user", "content": random_text(31 * MIB)}]),
    ),
    ("10M token ids", "/v1/completions", lambda: {"model": "gpt", "prompt": [7] * 10_000_000}),
    (
        "16.7M token ids",
        "/v1/embeddings",
        lambda: {"model": "gpt", "input": [[7] * 8150] * 2048},
    ),
]


def forget() -> None:
    """Empty the memos of long texts' counts and clean texts: every run reads the body as
    a new prompt (an agent's next turn, which reads only its new messages, is measured
    through Envoy by bench/large_prompts.py)."""
    tokens.MEMO = tokens.Memo(tokens.MEMO.entries)
    engine.READ = type(engine.READ)(engine.READ.entries)


def best(action: Callable[[Any], object], runs: int, setup: Callable[[], Any] = dict) -> float:
    """The shortest of `runs` runs of action(setup()), setup not timed, each run on empty
    memos."""
    times = []
    for _ in range(runs):
        forget()
        given = setup()
        start = time.perf_counter()
        action(given)
        times.append(time.perf_counter() - start)
        del given
    return min(times)


def request_body(raw: bytes, path: str, parts: list[float] | None = None) -> str:
    """The whole request path; what it decided (a reservation, or the 400 of a policy).
    `parts` gets the time of each part the event loop runs in one piece (a large body's
    policies pause between their slices)."""
    exchange = Exchange(RUNTIME, clock=lambda: 1.8e9)
    headers = {":path": path, ":method": "POST", "authorization": f"Bearer {KEY}"}
    assert isinstance(exchange.request_headers(headers, False), Continue)
    started = time.perf_counter()
    decision = exchange.request_body(raw)
    while isinstance(decision, Pause):
        now = time.perf_counter()
        if parts is not None:
            parts.append(now - started)
        started = now
        decision = exchange.resolve(RESUMED)
    if parts is not None:
        parts.append(time.perf_counter() - started)
    if isinstance(decision, Reply):
        return f"{decision.status} {exchange.error_code}"
    assert isinstance(decision, Reserve), decision
    return "reserved"


def longest_part(raw: bytes, path: str, runs: int) -> float:
    """The longest part of the request path the loop runs in one piece, best of `runs`."""
    found = []
    for _ in range(runs):
        forget()
        parts: list[float] = []
        request_body(raw, path, parts)
        found.append(max(parts))
    return min(found)


def first_bound(kind: Kind, body: dict[str, Any]) -> int:
    """A first reservation's prompt bound, as the budget asks for it."""
    return finish(prompt_bounding(kind, body, "team", QUICK_READ, short=False))


def stages(path: str, raw: bytes, runs: int) -> tuple[list[float], str]:
    endpoint = ENDPOINTS[path]
    body = orjson.loads(raw)
    assert validate(endpoint, body) is None
    policies = RUNTIME.policy_set(RUNTIME.tenants["team"], RUNTIME.models[0])

    def policy(parsed: dict[str, Any]) -> None:
        evaluate_request(policies, endpoint.kind, parsed, Redactions(), Decisions())

    return [
        best(lambda _: orjson.loads(raw), runs),
        best(lambda _: validate(endpoint, body), runs),
        best(policy, runs, lambda: copy.deepcopy(body)),
        best(
            lambda _: finish(prompt_bounding(endpoint.kind, body, "team", QUICK_READ, short=False)),
            runs,
        ),
        best(lambda _: prompt_estimate(endpoint.kind, body), runs),
        best(lambda _: request_body(raw, path), runs),
        longest_part(raw, path, runs),
    ], request_body(raw, path)


def main() -> None:
    print(machine())
    tokens.preload()
    print(
        f"{'shape':26s} {'MiB':>5s}  parse validate policy bound estimate request_body"
        " longest_part (ms)"
    )
    for label, path, build in SHAPES:
        raw = orjson.dumps(build())
        assert len(raw) <= LIMIT, (label, len(raw))
        small = len(raw) < MIB
        figures, outcome = stages(path, raw, 2000 if len(raw) < 64 * 1024 else 20 if small else 3)
        shown = "  ".join(f"{f * 1000:8.3f}" if small else f"{f * 1000:8.0f}" for f in figures)
        print(f"{label:26s} {len(raw) / MIB:5.1f}  {shown}  {outcome}", flush=True)


if __name__ == "__main__":
    main()
