"""Captured MCP requests sent again (`extproc replay`), and their answers compared.

Each record's message goes to its endpoint on the target (`/mcp/<server>`, or `/mcp`, the
virtual server, called by the name the client used there), in a session the replay opens
once per endpoint where the target gives one (`initialize`, then
`notifications/initialized`) and ends when it is done. The answer is compared with the
captured one: the HTTP status; a result or an error, and the error's code; a result's
keys; a tool list's names.
"""

from __future__ import annotations

from typing import Any, TextIO

import httpx
import orjson

from extproc.apis import mcp
from extproc.capture import events_of
from extproc.tools.catalog import ROUTED

# The protocol version the replay's sessions ask for: one every current server knows.
PROTOCOL = "2025-06-18"
_CLIENT = {"name": "extproc-replay", "version": "1"}
# Records whose answer depended on the client's own session, not on its message.
_SESSION_BOUND = frozenset({"session"})


def received(response: httpx.Response) -> Any:
    """An answer as a record holds it: the JSON body, a stream's event payloads
    ({"events": [...]}), or None."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return events_of(response.content)
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def message_of(captured: dict[str, Any]) -> dict[str, Any] | None:
    """The message to send for a record, as its client sent it to the gateway; None when
    the record cannot be replayed (its message cut, withheld or unread, or its answer the
    client's session's)."""
    request, path = captured.get("request"), captured.get("path")
    if not isinstance(request, dict) or request.get("jsonrpc") != mcp.JSONRPC:
        return None
    if not isinstance(path, str) or not (path == "/mcp" or path.startswith("/mcp/")):
        return None  # a record edited by hand: only the target's MCP endpoints are called
    if captured.get("withheld") or captured.get("refusal") in _SESSION_BOUND:
        return None
    requested = captured.get("requested_name")
    field = ROUTED.get(str(request.get("method")))
    params = request.get("params")
    if isinstance(requested, str) and field is not None and isinstance(params, dict):
        return {**request, "params": {**params, field: requested}}
    return request


def _answer(response: Any) -> dict[str, Any] | None:
    """The response message of an answer: the JSON body's, or the event that carries a
    result or an error."""
    candidates = response.get("events") if isinstance(response, dict) else None
    if not isinstance(candidates, list):
        candidates = [response]
    for message in candidates:
        if (
            isinstance(message, dict)
            and "method" not in message
            and ("result" in message or "error" in message)
        ):
            return message
    return None


def _said(message: dict[str, Any] | None) -> str:
    if message is None:
        return "no answer"
    if "error" not in message:
        return "result"
    error = message["error"]
    return f"error {error.get('code')}" if isinstance(error, dict) else "error"


def _names(result: dict[str, Any]) -> set[str]:
    tools = result.get("tools")
    if not isinstance(tools, list):
        return set()
    return {tool["name"] for tool in tools if isinstance(tool, dict) and "name" in tool}


def _changes(what: str, before: set[str], after: set[str]) -> list[str]:
    found = []
    if after - before:
        found.append(f"{what} added: " + ", ".join(sorted(after - before)))
    if before - after:
        found.append(f"{what} missing: " + ", ".join(sorted(before - after)))
    return found


def compare(captured: dict[str, Any], status: int, answer: Any) -> list[str]:
    """The differences between a captured MCP request's answer and its replay's, in words."""
    differences = []
    if captured.get("status") != status:
        differences.append(f"status {captured.get('status')} -> {status}")
    kept = captured.get("response")
    if isinstance(kept, dict) and kept.get("truncated"):
        return differences  # only its size was kept
    before, after = _answer(kept), _answer(answer)
    said_before, said_after = _said(before), _said(after)
    if said_before != said_after:
        differences.append(f"{said_before} -> {said_after}")
        return differences
    if before is None or after is None or said_before != "result":
        return differences
    old, new = before["result"], after["result"]
    if not isinstance(old, dict) or not isinstance(new, dict):
        return differences
    differences += _changes("fields", set(old), set(new))
    if captured.get("rpc_method") == "tools/list":
        differences += _changes("tools", _names(old), _names(new))
    return differences


class Sessions:
    """The replay's sessions on the target, one per endpoint, opened on first use."""

    def __init__(self, client: httpx.Client, headers: dict[str, str], out: TextIO) -> None:
        self.client = client
        self.headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **headers,
        }
        self.out = out
        self.endpoints: dict[str, dict[str, str]] = {}
        self.opened: list[tuple[str, dict[str, str]]] = []  # to end when done
        self.ids = 0

    def post(self, path: str, message: dict[str, Any]) -> httpx.Response:
        """Send `message` (a request under an id of the replay's) in the endpoint's session;
        an initialize opens a session of its own, ended when the replay is done."""
        if "id" in message:
            self.ids += 1
            message = {**message, "id": self.ids}
        if message.get("method") == "initialize":
            response = self.client.post(path, content=orjson.dumps(message), headers=self.headers)
            self._keep(path, response, message)
            return response
        session = self.endpoints.get(path)
        if session is None:
            session = self.endpoints[path] = self._open(path)
        headers = {**self.headers, **session}
        return self.client.post(path, content=orjson.dumps(message), headers=headers)

    def _open(self, path: str) -> dict[str, str]:
        params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": _CLIENT}
        self.ids += 1
        message = {"jsonrpc": mcp.JSONRPC, "id": self.ids, "method": "initialize"}
        response = self.client.post(
            path, content=orjson.dumps({**message, "params": params}), headers=self.headers
        )
        if response.status_code != 200:
            self.out.write(
                f"{path}: initialize answered {response.status_code}; "
                "its records go without a session\n"
            )
            return {}
        session = self._keep(path, response, message)
        self.client.post(
            path,
            content=mcp.notification_body("notifications/initialized"),
            headers={**self.headers, **session},
        )
        return session

    def _keep(self, path: str, response: httpx.Response, message: dict[str, Any]) -> dict[str, str]:
        """The headers a session's requests carry (its id, where the target gave one, and
        the protocol version it agreed to)."""
        answer = _answer(received(response))
        result = answer.get("result") if answer is not None else None
        version = result.get("protocolVersion") if isinstance(result, dict) else None
        asked = (message.get("params") or {}).get("protocolVersion", PROTOCOL)
        session = {mcp.PROTOCOL_VERSION_HEADER: str(version or asked)}
        session_id = response.headers.get(mcp.SESSION_HEADER)
        if session_id:
            session[mcp.SESSION_HEADER] = session_id
            self.opened.append((path, session))
        return session

    def close(self) -> None:
        """End the sessions the replay opened (a target that fails to is left to expire
        them)."""
        for path, session in self.opened:
            try:
                self.client.delete(path, headers={**self.headers, **session})
            except httpx.HTTPError:
                continue
