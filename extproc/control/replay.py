"""`extproc replay CAPTURE --url GATEWAY`: send captured requests again, report changes.

Each captured request (the body the provider saw, with the gateway's model name put
back) goes to a gateway in the API the provider spoke; the answer is compared with the
captured one by status, shape (the JSON field paths, as the schema-drift watch sees
them) and usage. Captured MCP requests go to their MCP endpoint (`mcp_replay`). Use it
to check a config or model change against real traffic before rolling it out. The exit
status is 1 when any exchange differs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from extproc import drift
from extproc.accounting.usage import Meter
from extproc.apis import Kind, Schema
from extproc.control import mcp_replay

_KINDS = {
    "/chat/completions": Kind.CHAT,
    "/messages": Kind.MESSAGES,
    "/embeddings": Kind.EMBEDDINGS,
    "/completions": Kind.COMPLETIONS,
    "/responses": Kind.RESPONSES,
}


def records(path: Path) -> list[dict[str, Any]]:
    """The file's records, read whole before any is sent: a gateway that captures into
    the same file while it is replayed does not feed the replay its own requests."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


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


def _request(
    captured: dict[str, Any], api_key: str | None, headers: dict[str, str] | None
) -> tuple[str, bytes, dict[str, str]] | None:
    """The path, body and headers to send a captured exchange's request again with; None
    when only its size was kept."""
    request = captured.get("request")
    if not isinstance(request, dict) or request.get("truncated"):
        return None
    api = Schema(captured.get("upstream_api", "openai"))
    body = {**request, "model": captured.get("requested_model", request.get("model"))}
    sent = {"content-type": "application/json", **(headers or {})}
    if api is Schema.ANTHROPIC:
        sent.setdefault("anthropic-version", "2023-06-01")
        if api_key:
            sent["x-api-key"] = api_key
    elif api_key:
        sent["authorization"] = f"Bearer {api_key}"
    path = f"/v1{captured.get('upstream_endpoint', '/chat/completions')}"
    return path, orjson.dumps(body), sent


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
    mcp_headers = {**(headers or {})}
    if api_key:
        mcp_headers["authorization"] = f"Bearer {api_key}"
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        sessions = mcp_replay.Sessions(client, mcp_headers, out)
        try:
            for captured in records(path):
                if captured.get("mcp"):
                    message = mcp_replay.message_of(captured)
                    if message is None:
                        skipped += 1
                        continue
                    response = sessions.post(str(captured["path"]), message)
                    answer = mcp_replay.received(response)
                    differences = mcp_replay.compare(captured, response.status_code, answer)
                else:
                    request = _request(captured, api_key, headers)
                    if request is None:
                        skipped += 1
                        continue
                    target, body, sent = request
                    response = client.post(target, content=body, headers=sent)
                    answer = mcp_replay.received(response)
                    differences = compare(captured, response.status_code, answer)
                replayed += 1
                name = captured.get("request_id") or f"#{replayed}"
                if differences:
                    differing += 1
                    out.write(f"{name}: " + "; ".join(differences) + "\n")
                else:
                    out.write(f"{name}: same\n")
        finally:
            sessions.close()
    out.write(f"{replayed} replayed, {differing} differ, {skipped} skipped\n")
    return 1 if differing else 0
