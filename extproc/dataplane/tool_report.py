"""A finished MCP request as others see it: its audit record and its metrics."""

from __future__ import annotations

import hashlib
import time

import structlog

from extproc.dataplane.tools import ToolExchange
from extproc.telemetry import logging as json_lines
from extproc.telemetry.metrics import OTHER, Metrics

log = structlog.get_logger("extproc")

# Method names as metric labels: the protocol's, any other is one value (a client names
# methods, and labels must stay bounded).
_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)


def record(tool: ToolExchange) -> dict[str, object]:
    """The audit record: who, which server and tool, what happened; never argument
    values or results."""
    fields: dict[str, object] = {
        "request_id": tool.request_id,
        "mcp": True,
        "method": tool.http_method,
        "path": tool.path,
        "tenant": tool.tenant.name if tool.tenant else None,
        "server": tool.server.name if tool.server else None,
        "session": _session_tag(tool.session),
        "rpc_method": tool.rpc_method,
        "tool": tool.tool,
        "status": tool.status,
        "outcome": tool.outcome or "cancelled",
        "duration_ms": round((time.monotonic() - tool.started) * 1000, 3),
        "bytes_in": tool.bytes_in,
        "bytes_out": tool.bytes_out,
    }
    if tool.error_code is not None:
        fields["rpc_error"] = tool.error_code
    if tool.refusal is not None:
        fields["refusal"] = tool.refusal
    if tool.decisions.counts:
        fields["policy"] = tool.decisions.records()
    return fields


def _session_tag(session: str) -> str:
    """The session in records: a digest, since the id is what lets a client in."""
    return hashlib.sha256(session.encode()).hexdigest()[:16] if session else ""


def finished(metrics: Metrics, tool: ToolExchange, failed: bool) -> dict[str, object]:
    """Log the audit record and count the request; the record."""
    fields = record(tool)
    if failed:
        fields["status"] = 500
        fields["outcome"] = "internal_error"
    json_lines.info("mcp", fields)
    server = tool.server.name if tool.server is not None else OTHER
    for change in tool.changes:
        against = "pin" if change.pinned else "first_seen"
        metrics.mcp_tool_changes.labels(change.server, change.tool, against).inc()
        log.warning(
            "mcp_tool_changed",
            server=change.server,
            tool=change.tool,
            against=against,
            old=change.old,
            new=change.new,
        )
    for key in tool.decisions.counts:
        metrics.policy_decisions.labels(*key).inc()
    if tool.refusal is not None:
        metrics.mcp_refusals.labels(server, tool.refusal).inc()
    if tool.server is None:
        return fields  # refused before a server was named: no operation to time
    method = tool.rpc_method or tool.http_method
    outcome = str(fields["outcome"])
    labels = [
        method if method in _METHODS or method in ("GET", "DELETE") else OTHER,
        tool.tool if tool.tool and tool.pins.known(server, tool.tool) else "",
        "" if outcome == "ok" else outcome,
        server,
    ]
    if metrics.tenant_labels:
        labels.append(tool.tenant.name if tool.tenant is not None else "")
    metrics.mcp_operation_duration.labels(*labels).observe(time.monotonic() - tool.started)
    return fields
