"""A sampled MCP request's capture record: its audit record's fields, the JSON-RPC message
as the server got it and the answer as the client got it. No headers, so no session id
and no credential; nothing a policy would have kept from a server.

Built when the request is over, from the bytes `capture.Kept` held: a request that was not
sampled costs nothing here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from extproc.dataplane.tools import ToolExchange
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.tools import Refusal, scan_arguments
from extproc.tools.catalog import ROUTED


def capture_record(tool: ToolExchange, summary: dict[str, object], now: float) -> dict[str, Any]:
    """The record of a sampled request (`tool.kept` set); `summary` is its audit record."""
    kept = tool.kept
    assert kept is not None
    record: dict[str, Any] = {"time": dt.datetime.fromtimestamp(now, dt.UTC).isoformat()}
    record.update(summary)
    if kept.forwarded:
        request = kept.request()
        if tool.virtual and kept.sent is not None and isinstance(request, dict):
            requested = _requested_name(tool, kept.received, request)
            if requested is not None:
                record["requested_name"] = requested
    else:
        request, withheld = _unsent(tool, kept.received, kept.limit)
        if withheld is not None:
            record["withheld"] = withheld
    record["request"] = request
    response = kept.response()
    if response is not None:
        record["response"] = response
    return record


def _unsent(tool: ToolExchange, raw: bytes, limit: int) -> tuple[Any, str | None]:
    """A message the gateway answered itself, as a server would have got it, and what was
    withheld of it: `params.arguments` as the tenant's tool-call policies pass them
    ("arguments" withheld when they would refuse them); a message the gateway could not
    read as its size ("request" withheld: nothing read it, and it may nest deeper than a
    record can hold)."""
    if len(raw) > limit:
        return {"truncated": True, "bytes": len(raw)}, None
    if tool.rpc_method is None and tool.rpc_id is None:  # refused as unreadable
        return {"unread": True, "bytes": len(raw)}, "request"
    request = orjson.loads(raw)  # read whole already, as a JSON-RPC message
    params = request.get("params")
    if not isinstance(params, dict) or params.get("arguments") is None:
        return request, None
    arguments = params["arguments"]
    passed = (
        scan_arguments(
            tool.policies,
            arguments,
            Redactions(),
            Decisions(),
            max_depth=tool.runtime.mcp.max_depth,
        )
        if isinstance(arguments, dict)
        else None
    )
    if passed is None or isinstance(passed, Refusal):
        kept = {key: value for key, value in params.items() if key != "arguments"}
        return {**request, "params": kept}, "arguments"
    if passed is arguments:
        return request, None
    return {**request, "params": {**params, "arguments": passed}}, None


def _requested_name(tool: ToolExchange, received: bytes, sent: dict[str, Any]) -> str | None:
    """The name the client called on the virtual server, where the server's differs (its
    `tool_prefix`): replay calls the virtual server by it."""
    field = ROUTED.get(tool.rpc_method or "")
    if field is None:
        return None
    # Both were read whole as JSON-RPC messages: objects, whose params are objects.
    asked = (orjson.loads(received).get("params") or {}).get(field)
    got = (sent.get("params") or {}).get(field)
    return asked if isinstance(asked, str) and asked != got else None
