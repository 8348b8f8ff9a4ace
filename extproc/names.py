"""Every header name and metadata key the gateway sets or reads, in one place."""

# Set by the service on the request; the route table matches it to pick a cluster.
ROUTE_HEADER = "x-extproc-cluster"
# Fallback routes only: the model name the client's request resolved to (for the
# per-attempt processor, which has to pick each attempt's upstream model).
MODEL_HEADER = "x-extproc-model"
# Fallback routes only: the endpoint path below the version prefix, plus the query.
SUFFIX_HEADER = "x-extproc-suffix"
INTERNAL_REQUEST_HEADERS = (ROUTE_HEADER, MODEL_HEADER, SUFFIX_HEADER)
# Set by Envoy for the hop to the provider; they describe the internal network (client
# addresses, retry counts) and are none of an external provider's business.
PROXY_REQUEST_HEADERS = (
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-envoy-external-address",
    "x-envoy-attempt-count",
    "x-forwarded-client-cert",
)

# gRPC metadata Envoy sends on streams from the per-attempt (upstream) ext_proc filter.
ROLE_METADATA = "x-extproc-role"
ROLE_UPSTREAM = "upstream"
# Endpoint metadata namespace and key naming the backend of an Envoy endpoint.
METADATA_NAMESPACE = "extproc"
HOST_METADATA_ATTRIBUTE = "xds.upstream_host_metadata"

# Set by Envoy (include_request_attempt_count / include_attempt_count_in_response).
ATTEMPT_HEADER = "x-envoy-attempt-count"
# Mutual TLS identity, written by Envoy (forward_client_cert_details: SANITIZE_SET).
CLIENT_CERT_HEADER = "x-forwarded-client-cert"
REQUEST_ID_HEADER = "x-request-id"
