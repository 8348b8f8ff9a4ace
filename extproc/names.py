from typing import Final

"""Every header name and metadata key the gateway sets or reads, in one place."""

# Set by the service on the request; the route table matches it to pick a cluster.
ROUTE_HEADER: Final = "x-extproc-cluster"
INTERNAL_REQUEST_HEADERS: Final = (ROUTE_HEADER,)
# Where a client presents its gateway key, in the order identity.py reads them: each
# SDK's default (OpenAI "Authorization: Bearer", Anthropic "x-api-key", Azure OpenAI
# "api-key", Google "x-goog-api-key").
GATEWAY_KEY_HEADERS: Final = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
# Set by Envoy for the hop to the provider; they describe the internal network (client
# addresses, retry counts) and are none of an external provider's business.
PROXY_REQUEST_HEADERS: Final = (
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-envoy-external-address",
    "x-envoy-attempt-count",
    "x-forwarded-client-cert",
)

# gRPC metadata Envoy sends on streams from the per-attempt (upstream) ext_proc filter.
ROLE_METADATA: Final = "x-extproc-role"
ROLE_UPSTREAM: Final = "upstream"
# Dynamic metadata namespace of the service, and of endpoint metadata naming a backend.
METADATA_NAMESPACE: Final = "extproc"
# Fallback routes: what the per-attempt processor needs from the downstream exchange.
# Dynamic metadata, not headers: upstream filters share the request's header map across
# attempts, so a header removed before one attempt is gone for the next.
METADATA_ROUTE: Final = "route"  # the fallback route's cluster
METADATA_MODEL: Final = "model"  # the model name the client's request resolved to
METADATA_SUFFIX: Final = "suffix"  # the endpoint path below the version prefix, plus the query
# Fallback chains across APIs: the client's API and the query string, so each attempt can
# translate the body and pick its backend's endpoint.
METADATA_API: Final = "api"
METADATA_QUERY: Final = "query"
# The gateway added stream_options.include_usage; an attempt whose backend omits it drops it.
METADATA_ADDED_STREAM_OPTIONS: Final = "added_stream_options"
HOST_METADATA_ATTRIBUTE: Final = "xds.upstream_host_metadata"

# Set by Envoy (include_request_attempt_count / include_attempt_count_in_response).
ATTEMPT_HEADER: Final = "x-envoy-attempt-count"
# Mutual TLS identity, written by Envoy (forward_client_cert_details: SANITIZE_SET).
CLIENT_CERT_HEADER: Final = "x-forwarded-client-cert"
REQUEST_ID_HEADER: Final = "x-request-id"
# On answers served from the response cache.
CACHE_HEADER: Final = "x-extproc-cache"
# On a token count the service answered itself: counted offline, an estimate of the provider's.
ESTIMATE_HEADER: Final = "x-extproc-estimate"
# Sent by every Anthropic SDK request; it tells the API the client speaks.
ANTHROPIC_VERSION_HEADER: Final = "anthropic-version"
