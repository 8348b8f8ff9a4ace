"""What the service decides for one ext_proc message; envoy.py turns these into protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extproc.accounting.budgets import Reservation


@dataclass(slots=True)
class Continue:
    """Let the HTTP message through, changed as described."""

    set_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    # A replacement body (the caller also sets content-length).
    body: bytes | None = None
    # Re-pick the route after these changes (the routing header was set).
    clear_route_cache: bool = False
    # Do not send the request body to the service (per-attempt processor, nothing to change).
    skip_request_body: bool = False
    # Dynamic metadata to emit in the service's namespace.
    metadata: dict[str, str | int | float] | None = None
    # Response headers only: have Envoy send the response body, "buffered" or "streamed".
    response_body: str | None = None


@dataclass(slots=True)
class Reply:
    """Answer the client directly; nothing is sent upstream."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Reserve:
    """Reserve in the budget store first (I/O the shell performs), then continue with
    `then`; the exchange decides what a refusal becomes."""

    reservation: Reservation
    then: Continue


@dataclass(slots=True)
class Lookup:
    """Look the answer up in the response cache first (I/O the shell performs); on a miss
    the exchange goes on with `then`."""

    key: str
    then: Continue | Reserve


Decision = Continue | Reply
