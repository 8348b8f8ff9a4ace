"""The config's process-level sections as the service reads them: typed, defaults filled,
paths absolute, durations in seconds. Equal values mean equal settings (a reload compares
them to tell whether it needs a restart)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from extproc.state.turns import Bounds


@dataclass(frozen=True, slots=True)
class ListenerTls:
    cert_file: str
    key_file: str
    client_ca_file: str  # "": clients present no certificate


@dataclass(frozen=True, slots=True)
class Listener:
    address: str
    port: int
    request_timeout: float  # 0: none
    tls: ListenerTls | None


@dataclass(frozen=True, slots=True)
class GrpcTlsClient:
    cert_file: str
    key_file: str
    ca_file: str
    server_name: str


@dataclass(frozen=True, slots=True)
class GrpcTls:
    cert_file: str
    key_file: str
    client_ca_file: str
    allowed_peers: tuple[str, ...]
    envoy_client: GrpcTlsClient | None  # None: the Envoy is configured elsewhere


@dataclass(frozen=True, slots=True)
class Service:
    grpc_address: str
    metrics_address: str  # "off": none
    message_timeout: float
    shutdown_grace: float
    failure_mode_allow: bool
    health_address: str  # "": none
    external_envoy: bool
    config_check_interval: float  # 0: on SIGHUP only
    workers: int
    grpc_tls: GrpcTls | None
    unauthenticated_grpc: bool

    @property
    def addresses(self) -> list[str]:
        """Each worker's listening address: grpc_address, then the next ports, or the Unix
        socket path with ".1", ".2", ... appended."""
        count = max(self.workers, 1)
        if self.grpc_address.startswith("unix://"):
            return [self.grpc_address] + [f"{self.grpc_address}.{i}" for i in range(1, count)]
        host, _, port = self.grpc_address.rpartition(":")
        return [f"{host}:{int(port) + index}" for index in range(count)]


@dataclass(frozen=True, slots=True)
class Admin:
    address: str
    port: int
    readiness_address: str  # "": none


@dataclass(frozen=True, slots=True)
class Redis:
    url: str
    key_prefix: str
    timeout: float
    password_env: str  # "": no password


@dataclass(frozen=True, slots=True)
class BudgetStore:
    redis: Redis | None  # None: in the service's memory
    fail_open: bool


@dataclass(frozen=True, slots=True)
class Cache:
    ttl: float
    max_entry_bytes: int
    max_bytes: int
    redis: Redis | None  # None: in the service's memory


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    """Conversation state for the Responses API (the config's `conversations`)."""

    bounds: Bounds  # ttl, max_items, max_bytes of one conversation
    max_total_bytes: int  # the in-process store's
    max_entries: int  # the in-process store's
    redis: Redis | None  # None: in the service's memory
    # No state kept; why, for the error a request continuing a conversation gets.
    disabled: bool
    disabled_because: str


@dataclass(frozen=True, slots=True)
class McpSettings:
    """How the gateway serves MCP (the config's `mcp`)."""

    session_ttl: int  # seconds a virtual-server session lives unused
    max_sessions: int  # the in-process store's
    redis: Redis | None  # None: sessions in the service's memory
    max_message_bytes: int  # one JSON-RPC message, a POST body or an SSE event
    max_depth: int  # nesting of arrays and objects in one
    list_ttl: float  # seconds the servers' lists are kept for the virtual server


@dataclass(frozen=True, slots=True)
class CaptureRate:
    models: tuple[str, ...]
    tenants: tuple[str, ...]
    rate: float
    mcp_servers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capture:
    path: str  # "": no capture
    sample_rate: float
    rates: tuple[CaptureRate, ...]
    max_file_bytes: int
    max_files: int
    max_body_bytes: int


@dataclass(frozen=True, slots=True)
class SchemaDrift:
    learning_responses: int
    disabled: bool
    check_every: int


@dataclass(frozen=True, slots=True)
class Telemetry:
    tenant_labels: bool


class CacheMode(StrEnum):
    """CachePolicy.Mode: which requests' answers the response cache keeps."""

    OFF = "off"
    DETERMINISTIC = "deterministic"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    mode: CacheMode
    shared: bool
