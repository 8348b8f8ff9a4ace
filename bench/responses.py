"""The Responses API and Anthropic Messages front doors beside Chat Completions, in `make
bench`: the service's CPU per request (JSON) and per event (paced streams), for the same
1 KB prompt.

Rows: Chat Completions to a chat backend (as it is); the Responses API to a backend that
takes it as it is (the same amount of work: route, meter, pass the bytes); the Responses API
to the chat backend, translated, with the conversation kept by the gateway (`store`, the
default), not kept (`store: false`), and continuing a kept conversation
(`previous_response_id`: a state load before the request, a longer request, a save after);
Anthropic's Messages API to an Anthropic backend (as it is) and to the chat backend
(translated both ways).
The setup is the full pipeline of `make bench` (a tenant, accounting of every response, the
demo policy on requests), the state in the service's memory. Figures are printed, not
asserted; the docs' benchmark page keeps them with the date and host.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from extproc.control.stack import free_port  # noqa: E402

NATIVE = '  - {{name: mock-native, url: "http://127.0.0.1:{mock_port}/v1", responses_api: true}}\n'
NATIVE_MODEL = "  - {{name: gpt-native, routes: [{{backend: mock-native}}]}}\n"
CONFIG = run.CONFIG.replace("models:\n", NATIVE + "models:\n" + NATIVE_MODEL)
NATIVE_BODY: dict[str, object] = {"model": "gpt-native"}
ANTHROPIC_BODY: dict[str, object] = {"model": "claude-bench"}
CHAT_MODEL: dict[str, object] = {"model": "gpt-4o-mini"}
# (label, path, body changes, streamed)
ROWS: list[tuple[str, str, dict[str, object], bool]] = [
    ("Chat Completions -> chat backend", "/v1/chat/completions", {}, False),
    ("Chat Completions -> Anthropic backend", "/v1/chat/completions", ANTHROPIC_BODY, False),
    ("Responses -> Responses backend", "/v1/responses", NATIVE_BODY, False),
    ("Responses -> chat backend, kept", "/v1/responses", {}, False),
    ("Responses -> chat backend, store: false", "/v1/responses", {"store": False}, False),
    ("Responses -> chat backend, continued", "/v1/responses", {"previous": True}, False),
    ("Chat Completions -> chat backend, paced stream", "/v1/chat/completions", {}, True),
    ("Responses -> Responses backend, paced stream", "/v1/responses", NATIVE_BODY, True),
    ("Responses -> chat backend, kept, paced stream", "/v1/responses", {}, True),
    ("Messages -> Anthropic backend", "/v1/messages", ANTHROPIC_BODY, False),
    ("Messages -> chat backend, translated", "/v1/messages", CHAT_MODEL, False),
    ("Messages -> Anthropic backend, paced stream", "/v1/messages", ANTHROPIC_BODY, True),
    ("Messages -> chat backend, paced stream", "/v1/messages", CHAT_MODEL, True),
]


def responses_body(chat: dict[str, object]) -> dict[str, object]:
    """The same prompt in the Responses API: the system message as instructions."""
    messages = chat["messages"]
    assert isinstance(messages, list)
    return {
        "model": chat["model"],
        "instructions": messages[0]["content"],
        "input": [{"role": "user", "content": messages[1]["content"]}],
    }


def messages_body(chat: dict[str, object]) -> dict[str, object]:
    """The same prompt in Anthropic's Messages API: the system message as `system`."""
    messages = chat["messages"]
    assert isinstance(messages, list)
    return {
        "model": chat["model"],
        "max_tokens": 1024,
        "system": messages[0]["content"],
        "messages": [{"role": "user", "content": messages[1]["content"]}],
    }


def first_response(base: str, body: dict[str, object]) -> str:
    """The id of a kept answer, for the rows that continue a conversation."""
    request = urllib.request.Request(
        base + "/v1/responses",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.load(answer)["id"])


def events_of(base: str, path: str, body: bytes) -> int:
    """The SSE events the backend sends for one request (what the service reads)."""
    request = urllib.request.Request(
        base + path, data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return sum(1 for line in answer.read().splitlines() if line.startswith(b"data:"))


def main() -> None:
    run.CONFIG = CONFIG
    chat = json.loads(run.chat_body(1024))
    results: dict[str, list[float]] = {}
    events: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="extproc-bench-responses-") as tmp:
        workdir = Path(tmp)
        mock_port = free_port()
        mock = run.start_mock(mock_port, workdir)
        tail = run.POLICY.replace("DIRS", "request")
        stack, url = run.start_setup(workdir / "full", mock_port, tail)
        base = url.removesuffix("/v1/chat/completions")
        try:
            bodies: dict[str, Path] = {}
            for number, (label, path, changes, streamed) in enumerate(ROWS):
                body = (
                    dict(chat)
                    if path.endswith("completions")
                    else messages_body(chat)
                    if path.endswith("messages")
                    else responses_body(chat)
                )
                if changes.pop("previous", False):
                    body["previous_response_id"] = first_response(base, body)
                body.update(changes)
                if streamed:
                    body["stream"] = True
                bodies[label] = workdir / f"body-{number}.json"
                bodies[label].write_text(json.dumps(body))
                if streamed:
                    # What the backend sends: a chat stream to the chat backend.
                    backend = "/v1/chat/completions" if "chat backend" in label else path
                    sent = json.dumps(
                        {**chat, "stream": True} if backend.endswith("completions") else body
                    )
                    upstream = f"http://127.0.0.1:{mock_port}"
                    events[label] = events_of(upstream, backend, sent.encode())
            for _ in range(run.ROUNDS):
                for label, path, _, streamed in ROWS:
                    headers = run.PACED_HEADERS if streamed else None
                    result = run.measure(stack, mock, base + path, bodies[label], headers)
                    assert not result["errors"], f"{label}: {result['errors']} errors"
                    results.setdefault(label, []).append(result["service_cpu_us"])
                    print(f"{label}: {result['rps']:,.0f}/s", flush=True)
        finally:
            stack.stop()
            mock.terminate()
            mock.wait()
    print(f"\nmachine: {run.machine()}")
    print("service CPU, median of rounds (µs per request; per event for paced streams)")
    baseline: dict[bool, float] = {}
    for label, _, _, streamed in ROWS:
        cpu = statistics.median(results[label])
        per = cpu / events[label] if streamed else cpu
        baseline.setdefault(streamed, per)
        unit = f"{per:6.1f} µs/event ({events[label]} events)" if streamed else f"{per:6.0f} µs"
        print(f"  {label:50s} {unit}  {per / baseline[streamed]:5.2f}x")


if __name__ == "__main__":
    main()
