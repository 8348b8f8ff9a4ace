"""`extproc replay CAPTURE --url GATEWAY`: send captured requests again, report changes.

Each captured request (the body the provider saw, with the gateway's model name put
back) goes to a gateway in the API the provider spoke; the answer is compared with the
captured one by status, shape (the JSON field paths, as the schema-drift watch sees
them) and usage. Use it to check a config or model change against real traffic before
rolling it out. The exit status is 1 when any exchange differs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from extproc import drift
from extproc.accounting.usage import Meter
from extproc.apis import Kind, Schema
from extproc.sse import Parser

_KINDS = {
    "/chat/completions": Kind.CHAT,
    "/messages": Kind.MESSAGES,
    "/embeddings": Kind.EMBEDDINGS,
    "/completions": Kind.COMPLETIONS,
    "/responses": Kind.RESPONSES,
}


def records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                yield orjson.loads(line)


def _shape_and_usage(api: Schema, kind: Kind, response: Any) -> tuple[set[str], tuple[int, int]]:
    meter = Meter(api, kind)
    found: set[str] = set()
    if isinstance(response, dict) and isinstance(response.get("events"), list):
        read = meter.event_reader()
        for event in response["events"]:
            if not isinstance(event, dict):
                continue
            drift.event_paths(event, found)
            read(event)
    elif isinstance(response, dict):
        found = drift.paths(response)
        meter.json(response)
    usage = meter.reported
    return found, (usage.get("input_tokens", -1), usage.get("output_tokens", -1))


def _received(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        parser = Parser()
        events = parser.feed(response.content) + parser.close()
        payloads = []
        for event in events:
            try:
                payloads.append(orjson.loads(event.data))
            except orjson.JSONDecodeError:
                payloads.append(event.data)
        return {"events": payloads}
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def compare(captured: dict[str, Any], status: int, received: Any) -> list[str]:
    """The differences between a captured exchange and its replay, in words."""
    api = Schema(captured.get("upstream_api", "openai"))
    kind = _KINDS.get(str(captured.get("upstream_endpoint")), Kind.CHAT)
    differences = []
    if captured.get("status") != status:
        differences.append(f"status {captured.get('status')} -> {status}")
    before, used_before = _shape_and_usage(api, kind, captured.get("response"))
    after, used_after = _shape_and_usage(api, kind, received)
    added, missing = drift.tops(after - before), drift.tops(before - after)
    if added:
        differences.append("fields added: " + ", ".join(sorted(added)))
    if missing:
        differences.append("fields missing: " + ", ".join(sorted(missing)))
    if used_before != used_after:
        before_text = "/".join(map(str, used_before))
        after_text = "/".join(map(str, used_after))
        differences.append(f"usage input/output {before_text} -> {after_text}")
    return differences


def replay(
    path: Path,
    url: str,
    *,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
    out: TextIO = sys.stdout,
    timeout: float = 60.0,
) -> int:
    replayed = differing = skipped = 0
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        for captured in records(path):
            request = captured.get("request")
            if not isinstance(request, dict) or request.get("truncated"):
                skipped += 1
                continue
            api = Schema(captured.get("upstream_api", "openai"))
            body = {**request, "model": captured.get("requested_model", request.get("model"))}
            sent = {"content-type": "application/json", **(headers or {})}
            if api is Schema.ANTHROPIC:
                sent.setdefault("anthropic-version", "2023-06-01")
                if api_key:
                    sent["x-api-key"] = api_key
            elif api_key:
                sent["authorization"] = f"Bearer {api_key}"
            response = client.post(
                f"/v1{captured.get('upstream_endpoint', '/chat/completions')}",
                content=orjson.dumps(body),
                headers=sent,
            )
            differences = compare(captured, response.status_code, _received(response))
            replayed += 1
            name = captured.get("request_id") or f"#{replayed}"
            if differences:
                differing += 1
                out.write(f"{name}: " + "; ".join(differences) + "\n")
            else:
                out.write(f"{name}: same\n")
    out.write(f"{replayed} replayed, {differing} differ, {skipped} skipped\n")
    return 1 if differing else 0
