from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from extproc.config import load_file
from extproc.control.render import render, render_yaml
from extproc.control.stack import validate_envoy_config
from extproc.transport import Limits
from tests.helpers import BASE_CONFIG, ROOT, runtime

SHIPPED = [
    ("examples/demo.yaml", "envoy/demo.yaml"),
    ("examples/sidecar.yaml", "envoy/sidecar.yaml"),
]


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_one_cluster_per_backend_with_tls_origination() -> None:
    rendered = clusters(render(runtime()))
    openai = rendered["backend.openai"]
    tls = openai["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.test"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "api.openai.test"}}
    ]
    assert validation["trusted_ca"]["filename"] == "/etc/ssl/certs/ca-certificates.crt"
    endpoint = openai["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["hostname"] == "api.openai.test"
    assert endpoint["metadata"]["filter_metadata"]["extproc"]["backend"] == "openai"
    second = rendered["backend.second"]
    assert second["type"] == "STATIC" and "transport_socket" not in second
    assert (
        second["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["hostname"]
        == "10.0.0.2:8000"
    )


def test_fallback_chain_is_a_composite_cluster_with_a_per_attempt_processor() -> None:
    loaded = runtime()
    rendered = render(loaded)
    (cluster_name,) = loaded.fallback_routes
    composite = clusters(rendered)[cluster_name]
    assert composite["cluster_type"]["name"] == "envoy.clusters.composite"
    members = composite["cluster_type"]["typed_config"]["clusters"]
    assert members == [
        {"name": "backend.openai"},
        {"name": "backend.second"},
        {"name": "backend.anthropic"},
    ]
    filters = composite["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]["http_filters"]
    assert filters[0]["typed_config"]["grpc_service"]["initial_metadata"] == [
        {"key": "x-extproc-role", "value": "upstream"}
    ]
    routes = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    fallback = next(r for r in routes if r.get("name") == cluster_name)
    policy = fallback["route"]["retry_policy"]
    assert policy["num_retries"] == 2
    assert set(policy["retry_on"].split(",")) == {
        "connect-failure",
        "reset",
        "5xx",
        "retriable-status-codes",
    }
    assert policy["retriable_status_codes"] == [429]


def test_ext_proc_filter_fails_closed_with_a_raised_timeout() -> None:
    rendered = render(runtime())
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")[
        "typed_config"
    ]
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["message_timeout"] == "2.000s"
    assert ext_proc["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert ext_proc["processing_mode"]["response_body_mode"] == "NONE"
    assert hcm["forward_client_cert_details"] == "SANITIZE"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50051", [("127.0.0.1", 50051), ("127.0.0.1", 50052), ("127.0.0.1", 50053)]),
        ("unix:///run/e.sock", ["/run/e.sock", "/run/e.sock.1", "/run/e.sock.2"]),
    ],
)
def test_each_worker_is_an_endpoint_of_the_ext_proc_cluster(address: str, expected: list) -> None:
    cluster = clusters(
        render(runtime(f"service: {{workers: 3, grpc_address: '{address}'}}\n" + _minimal()))
    )["extproc"]
    endpoints = [
        e["endpoint"]["address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    found = [
        e["pipe"]["path"]
        if "pipe" in e
        else (e["socket_address"]["address"], e["socket_address"]["port_value"])
        for e in endpoints
    ]
    assert found == expected
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    single = clusters(render(runtime()))["extproc"]
    assert "lb_policy" not in single
    assert len(single["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 1


def test_every_rendered_config_is_accepted_by_envoy(tmp_path: Path) -> None:
    cert = ROOT / "tests" / "data"
    variants = {
        "base": runtime(),
        "fail-open": runtime(
            "service: {failure_mode_allow: true, grpc_address: 'unix:///tmp/x.sock'}\n" + _minimal()
        ),
        "workers": runtime(
            "service: {workers: 3, grpc_address: 'unix:///tmp/x.sock'}\n" + _minimal()
        ),
        "tls": runtime(
            f"listener: {{tls: {{cert_file: {cert}/server.pem, key_file: {cert}/server.key, client_ca_file: {cert}/ca.pem}}}}\n"
            + _minimal()
        ),
    }
    for name, loaded in variants.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(render_yaml(loaded))
        result = validate_envoy_config(path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize(("source", "shipped"), SHIPPED)
def test_shipped_envoy_configs_match_the_renderer_and_validate(source: str, shipped: str) -> None:
    expected = render_yaml(load_file(ROOT / source, resolve_secrets=False))
    assert (ROOT / shipped).read_text() == expected, f"{shipped} is stale: run `make envoy-configs`"
    result = validate_envoy_config(ROOT / shipped)
    assert result.returncode == 0, result.stdout + result.stderr


def _minimal() -> str:
    return 'backends: [{name: b, url: "http://127.0.0.1:9/v1"}]\nmodels: [{name: m, routes: [{backend: b}]}]\n'


def test_readiness_listener_only_when_configured() -> None:
    plain = render(runtime())
    assert [item["name"] for item in plain["static_resources"]["listeners"]] == ["gateway"]
    probed = render(runtime(BASE_CONFIG + "\nadmin: {readiness_address: '0.0.0.0:10001'}\n"))
    readiness = probed["static_resources"]["listeners"][1]
    assert readiness["name"] == "readiness"
    assert readiness["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 10001}
    manager = readiness["filter_chains"][0]["filters"][0]["typed_config"]
    check = manager["http_filters"][0]["typed_config"]
    assert check["pass_through_mode"] is False
    assert check["headers"] == [{"name": ":path", "string_match": {"exact": "/ready"}}]
    # Nothing else of Envoy is reachable there.
    (route,) = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert route["direct_response"] == {"status": 404}


def _routes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    return {r["name"]: r for r in routes}


def test_each_backends_route_removes_the_client_credentials_it_does_not_set() -> None:
    loaded = runtime()
    routes = _routes(render(loaded))
    credentials = {"authorization", "x-api-key", "api-key", "x-goog-api-key"}
    removed = {
        name: set(routes[f"backend.{name}"]["request_headers_to_remove"])
        for name in ("openai", "second", "anthropic")
    }
    # The service sets the backend's own credential header; Envoy removes the others.
    assert removed["openai"] >= credentials - {"authorization"}
    assert "authorization" not in removed["openai"]
    assert removed["anthropic"] >= credentials - {"x-api-key"}
    assert "x-api-key" not in removed["anthropic"]
    assert removed["second"] >= credentials | {"proxy-authorization"}
    for name, route in routes.items():
        if name.startswith("backend."):
            assert route["route"]["cluster"] == name
            assert route["match"]["headers"] == [
                {"name": "x-extproc-cluster", "string_match": {"exact": name}}
            ]
    # A fallback route removes them all: each attempt's processor sets that attempt's own.
    (fallback,) = loaded.fallback_routes
    assert set(routes[fallback]["request_headers_to_remove"]) >= credentials


def test_the_access_log_never_carries_the_query_string() -> None:
    manager = render(runtime())["static_resources"]["listeners"][0]["filter_chains"][0]
    log_format = manager["filters"][0]["typed_config"]["access_log"][0]["typed_config"]
    fields = log_format["log_format"]["json_format"]
    assert fields["path"] == "%PATH(NQ)%"
    assert not [value for value in fields.values() if ":PATH" in value or "QUERY" in value]


def test_a_backend_takes_as_many_requests_in_flight_as_the_service_takes_streams() -> None:
    """No provider's or MCP server's cluster refuses a request (Envoy's default breakers
    stop at 1,024) before the ext_proc cluster's streams run out."""
    rendered = clusters(render(load_file(ROOT / "examples" / "demo.yaml")))
    [limit] = rendered["extproc"]["circuit_breakers"]["thresholds"]
    upstreams = [c for name, c in rendered.items() if name.startswith(("backend.", "mcp."))]
    assert {c["name"].split(".")[0] for c in upstreams} == {"backend", "mcp"}
    for cluster in upstreams:
        [thresholds] = cluster["circuit_breakers"]["thresholds"]
        assert thresholds == {
            "max_connections": limit["max_requests"],
            "max_pending_requests": limit["max_requests"],
            "max_requests": limit["max_requests"],
        }, cluster["name"]
    assert limit["max_requests"] > 1024


def test_the_ext_proc_cluster_keeps_within_the_services_streams() -> None:
    """Envoy opens another connection rather than exceed the streams the service's
    transport takes on one, and lets through as many as the service's connections take."""
    served = Limits()
    options = clusters(render(runtime()))["extproc"]["typed_extension_protocol_options"]
    http = next(iter(options.values()))
    assert http["explicit_http_config"]["http2_protocol_options"] == {
        "max_concurrent_streams": served.max_concurrent_streams
    }
    assert float(http["common_http_protocol_options"]["idle_timeout"][:-1]) < served.idle_timeout
    [thresholds] = clusters(render(runtime()))["extproc"]["circuit_breakers"]["thresholds"]
    assert thresholds["max_requests"] == served.max_connections * served.max_concurrent_streams
