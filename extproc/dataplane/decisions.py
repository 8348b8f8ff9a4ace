"""What the service decides for one ext_proc message (envoy.py turns these into protobuf),
the effects an exchange asks the shell to perform, and their results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# Imported at run time: compiled dataclasses resolve their fields' types when defined.
from extproc.accounting.budgets import Charge, Reservation
from extproc.state.turns import Dropped, Turn


@dataclass(slots=True)
class Continue:
    """Let the HTTP message through, changed as described."""

    set_headers: list[tuple[str, str]]
    remove_headers: list[str]
    # A replacement body (the caller also sets content-length).
    body: bytes | None
    # Re-pick the route after these changes (the routing header was set).
    clear_route_cache: bool
    # Do not send the request body to the service (per-attempt processor, nothing to change).
    skip_request_body: bool
    # Dynamic metadata to emit in the service's namespace.
    metadata: dict[str, str | int | float] | None
    # Response headers only: have Envoy send the response body, "buffered" or "streamed".
    response_body: str | None
    # Headers only: `body` replaces the message's body whole, whatever arrives (Envoy
    # sends none of it to the service).
    replace_body: bool

    def __init__(
        self,
        set_headers: list[tuple[str, str]] | None = None,
        remove_headers: list[str] | None = None,
        body: bytes | None = None,
        clear_route_cache: bool = False,
        skip_request_body: bool = False,
        metadata: dict[str, str | int | float] | None = None,
        response_body: str | None = None,
        replace_body: bool = False,
    ) -> None:
        self.set_headers = [] if set_headers is None else set_headers
        self.remove_headers = [] if remove_headers is None else remove_headers
        self.body = body
        self.clear_route_cache = clear_route_cache
        self.skip_request_body = skip_request_body
        self.metadata = metadata
        self.response_body = response_body
        self.replace_body = replace_body


@dataclass(slots=True)
class Reply:
    """Answer the client directly; nothing is sent upstream."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


# -- effects: I/O the exchange asks the shell for, and what the shell feeds back ----------


@dataclass(frozen=True, slots=True)
class Lookup:
    """Look the answer up in the response cache."""

    key: str


@dataclass(frozen=True, slots=True)
class Reserve:
    """Reserve the request's estimate in the budget store."""

    reservation: Reservation


@dataclass(frozen=True, slots=True)
class LoadState:
    """Load a kept answer of the tenant's (a conversation's last turn)."""

    tenant: str
    response_id: str


@dataclass(frozen=True, slots=True)
class DeleteState:
    """Delete a kept answer of the tenant's."""

    tenant: str
    response_id: str


@dataclass(frozen=True, slots=True)
class Pause:
    """Serve what else waits on the event loop, then go on: a large body's work would hold
    the loop for milliseconds in one piece."""


PAUSE: Final = Pause()

Effect = Lookup | Reserve | LoadState | DeleteState | Pause


@dataclass(frozen=True, slots=True)
class Found:
    """The cache's answer to a Lookup: the stored answer, or None (a miss, or a cache that
    failed: a cache never fails a request)."""

    stored: bytes | None


@dataclass(frozen=True, slots=True)
class Reserved:
    """The budget store's answer to a Reserve: None when it took the reservation, or the
    charge whose budget is exhausted."""

    refused: Charge | None


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The store did not answer (an error, its timeout)."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """The state store's answer to a LoadState: the turn; Dropped when its conversation
    went past a bound; None when unknown, expired, or another tenant's."""

    turn: Turn | Dropped | None


@dataclass(frozen=True, slots=True)
class Deleted:
    """The state store's answer to a DeleteState: whether the answer was there."""

    existed: bool


@dataclass(frozen=True, slots=True)
class Resumed:
    """A Pause's result: the loop served what was waiting."""


RESUMED: Final = Resumed()

Result = Found | Reserved | Loaded | Deleted | Unavailable | Resumed

Decision = Continue | Reply
