"""What an MCP request asks of the shell when it cannot decide alone: the effects (the
session store, the servers, the budget store's counters) and their results, and `Flow`,
the generator that yields the first and is sent the second until it returns the phase's
decision."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from extproc.accounting.budgets import Reservation
from extproc.config.runtime import McpServer
from extproc.dataplane.decisions import Decision
from extproc.state.sessions import Session, Upstream


@dataclass(frozen=True, slots=True)
class LoadSession:
    session_id: str


@dataclass(frozen=True, slots=True)
class SaveSession:
    session_id: str
    session: Session


@dataclass(frozen=True, slots=True)
class EndSession:
    """Delete the session, and end its upstream sessions (in the background)."""

    session_id: str
    session: Session


@dataclass(frozen=True, slots=True)
class Fetch:
    """Each server's list (all its pages), opening an upstream session where the client's
    session has none with that server yet."""

    method: str
    servers: tuple[McpServer, ...]
    session: Session


@dataclass(frozen=True, slots=True)
class Open:
    """A new upstream session with the server."""

    server: McpServer


@dataclass(frozen=True, slots=True)
class SessionFound:
    session: Session | None


@dataclass(frozen=True, slots=True)
class Fetched:
    lists: dict[str, list[dict[str, Any]] | None]  # None: that server failed (why: failures)
    upstream: dict[str, Upstream]  # the upstream sessions opened on the way
    failures: dict[str, str]


@dataclass(frozen=True, slots=True)
class Opened:
    upstream: Upstream | None
    failure: str = ""


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class StoreDown:
    """The session store did not answer."""


@dataclass(frozen=True, slots=True)
class Count:
    """Count a call in the tenant's tool rates (the budget store's counters)."""

    reservation: Reservation


@dataclass(frozen=True, slots=True)
class Counted:
    """-1 when every rate had room, else the index of the charge that had none; None when
    the budget store did not answer (as for budgets: refused unless the store fails open)."""

    refused: int | None


Effect = LoadSession | SaveSession | EndSession | Fetch | Open | Count
Result = SessionFound | Fetched | Opened | Done | StoreDown | Counted
Flow = Generator[Effect, Result, Decision]
