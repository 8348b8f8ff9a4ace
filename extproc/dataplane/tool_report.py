"""A finished MCP request as others see it: its audit record and its metrics."""

from __future__ import annotations

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


def finished(metrics: Metrics, tool: ToolExchange, failed: bool) -> dict[str, object]:
    """Log the audit record and count the request; the record."""
    record = tool.record()
    if failed:
        record["status"] = 500
        record["outcome"] = "internal_error"
    json_lines.info("mcp", record)
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
        return record  # refused before a server was named: no operation to time
    method = tool.rpc_method or tool.http_method
    outcome = str(record["outcome"])
    labels = [
        method if method in _METHODS or method in ("GET", "DELETE") else OTHER,
        tool.tool if tool.tool and tool.pins.known(server, tool.tool) else "",
        "" if outcome == "ok" else outcome,
        server,
    ]
    if metrics.tenant_labels:
        labels.append(tool.tenant.name if tool.tenant is not None else "")
    metrics.mcp_operation_duration.labels(*labels).observe(time.monotonic() - tool.started)
    return record
