"""Envoy API values every part of the bootstrap writes."""

from __future__ import annotations

from typing import Any

# The prefix of every typed_config's @type.
TYPE = "type.googleapis.com/"


def address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def seconds(value: float) -> str:
    return f"{value:.3f}s"
