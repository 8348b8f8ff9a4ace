"""The mesh egress manifests: well-formed, their ext_proc filters parse as Envoy's
ExternalProcessor and ask for the phases extproc's own Envoy asks for, they point at the
Service the chart's processor mode creates, and an Envoy running that very filter, routing
by host as an egress gateway does, is served by the processor pod."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import grpc
import kubernetes_validate
import openai
import pytest
import trustme
import yaml
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from google.protobuf import any_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.control.render.ext_proc import ext_proc_filter
from extproc.control.render.listener import EXTPROC_LOG_FIELDS, access_log
from extproc.control.stack import envoy_binary, free_port, wait_until
from tests.helpers import ROOT, issue_certificate, runtime
from tests.k8s.conftest import (
    KUBE_VERSIONS,
    NAMESPACE,
    SECRETS,
    Rendered,
    config_maps,
    local_values,
)
from tests.k8s.pod import Pod

MESH = ROOT / "k8s" / "mesh"
EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest(kind: str, mesh: str = "") -> dict[str, Any]:
    """The one object of a kind in the mesh manifests (of one mesh when named)."""
    found = [
        d
        for path in (MESH / mesh).rglob("*.yaml")
        if not path.name.endswith("values.yaml")
        for d in documents(path)
        if d["kind"] == kind
    ]
    assert len(found) == 1, kind
    return found[0]


def istio_filter() -> dict[str, Any]:
    (patch,) = manifest("EnvoyFilter")["spec"]["configPatches"]
    return patch["patch"]["value"]  # type: ignore[no-any-return]


def parse_ext_proc(typed_config: dict[str, Any]) -> ext_proc_pb2.ExternalProcessor:
    """Strictly: an unknown field or a wrong enum value raises."""
    packed = json_format.ParseDict(typed_config, any_pb2.Any())
    assert packed.type_url == EXT_PROC_TYPE
    message = ext_proc_pb2.ExternalProcessor()
    assert packed.Unpack(message)
    return message


def phases(processor: ext_proc_pb2.ExternalProcessor) -> dict[str, str]:
    """The effective processing mode: unset values read as Envoy's defaults (headers
    sent, bodies not, trailers skipped)."""
    mode = processor.processing_mode
    defaults = {"header": "SEND", "trailer": "SKIP", "body": "NONE"}
    effective = {}
    for field in mode.DESCRIPTOR.fields:
        name = field.enum_type.values_by_number[getattr(mode, field.name)].name
        part = field.name.split("_")[1]
        effective[field.name] = defaults[part] if name == "DEFAULT" else name
    return effective


def ours() -> ext_proc_pb2.ExternalProcessor:
    return parse_ext_proc(ext_proc_filter(runtime().service))


def test_manifests_are_well_formed_objects() -> None:
    paths = sorted(p for p in MESH.rglob("*.yaml") if not p.name.endswith("values.yaml"))
    assert {p.parent.name for p in paths} == {"istio", "envoy-gateway"}
    kinds = set()
    for path in paths:
        for document in documents(path):
            assert document["apiVersion"] and document["metadata"]["name"], path
            kinds.add(document["kind"])
    assert {"ServiceEntry", "Gateway", "DestinationRule", "VirtualService", "EnvoyFilter"} <= kinds
    assert {"EnvoyExtensionPolicy", "HTTPRoute", "Backend", "BackendTLSPolicy"} <= kinds
    assert {"Telemetry", "EnvoyProxy"} <= kinds


# -- access logs -------------------------------------------------------------------------


def istio_access_log() -> dict[str, str]:
    """The format of the provider the egress gateway's Telemetry names."""
    telemetry = manifest("Telemetry")
    ((provider,),) = [entry["providers"] for entry in telemetry["spec"]["accessLogging"]]
    mesh = yaml.safe_load((MESH / "istio" / "istiod-values.yaml").read_text())["meshConfig"]
    (defined,) = [p for p in mesh["extensionProviders"] if p["name"] == provider["name"]]
    return defined["envoyFileAccessLog"]["logFormat"]["labels"]  # type: ignore[no-any-return]


def envoy_gateway_access_log() -> dict[str, str]:
    """The format of the EnvoyProxy the Gateway names."""
    gateway = manifest("Gateway", "envoy-gateway")
    reference = gateway["spec"]["infrastructure"]["parametersRef"]
    proxy = manifest("EnvoyProxy")
    assert (reference["group"], reference["kind"], reference["name"]) == (
        "gateway.envoyproxy.io",
        "EnvoyProxy",
        proxy["metadata"]["name"],
    )
    assert proxy["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    (setting,) = proxy["spec"]["telemetry"]["accessLog"]["settings"]
    assert setting["format"]["type"] == "JSON"
    return setting["format"]["json"]  # type: ignore[no-any-return]


def test_mesh_access_logs_are_extprocs_without_the_query_string() -> None:
    """Istio's and Envoy Gateway's default formats log the path with its query, where a
    client's key may travel, also for requests the service refuses. The manifests give
    their Envoys the format extproc renders for its own (path without query, usage), plus
    the host called; Envoy Gateway names its ext_proc filter its own way, so the filter's
    timings are not there."""
    ours = access_log()["typed_config"]["log_format"]["json_format"]
    assert ours["path"] == "%PATH(NQ)%"
    expected = {**ours, "authority": "%REQ(:AUTHORITY)%"}
    assert istio_access_log() == expected
    assert envoy_gateway_access_log() == {
        k: v for k, v in expected.items() if k not in EXTPROC_LOG_FIELDS
    }
    # Istio: the Telemetry selects the egress gateway, where the ext_proc filter is.
    telemetry = manifest("Telemetry")
    assert telemetry["metadata"]["namespace"] == manifest("EnvoyFilter")["metadata"]["namespace"]
    assert (
        telemetry["spec"]["selector"]["matchLabels"]
        == manifest("EnvoyFilter")["spec"]["workloadSelector"]["labels"]
    )


@pytest.mark.parametrize("mesh", ["istio", "envoy-gateway"])
def test_mesh_values_render_a_valid_processor(mesh: str, render: Callable[..., Rendered]) -> None:
    values = yaml.safe_load((MESH / mesh / "values.yaml").read_text())
    rendered = render(values)
    assert (
        rendered.one("Deployment")["metadata"]["labels"]["app.kubernetes.io/component"]
        == "processor"
    )
    for _, document in rendered.objects:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)


def test_istio_filter_is_an_external_processor_asking_what_ours_asks() -> None:
    value = istio_filter()
    assert value["name"] == "envoy.filters.http.ext_proc"
    theirs = parse_ext_proc(value["typed_config"])
    mine = ours()
    assert phases(theirs) == phases(mine)
    assert theirs.allow_mode_override and not theirs.failure_mode_allow
    assert (
        theirs.metadata_options.receiving_namespaces == mine.metadata_options.receiving_namespaces
    )
    assert theirs.message_timeout == mine.message_timeout
    # The provider is the host the app called: the service may not re-route.
    assert not theirs.mutation_rules.allow_all_routing.value


def test_istio_filter_sits_before_the_router_of_the_egress_gateway() -> None:
    envoy_filter = manifest("EnvoyFilter")
    assert envoy_filter["spec"]["workloadSelector"]["labels"] == {"istio": "egressgateway"}
    (patch,) = envoy_filter["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["patch"]["operation"] == "INSERT_BEFORE"
    assert patch["match"]["context"] == "GATEWAY"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == (
        "envoy.filters.http.router"
    )
    hosts = set(manifest("ServiceEntry")["spec"]["hosts"])
    assert hosts == set(manifest("Gateway", "istio")["spec"]["servers"][0]["hosts"])


def test_istio_filter_calls_the_service_the_chart_creates(render: Callable[..., Rendered]) -> None:
    rendered = render(yaml.safe_load((MESH / "istio" / "values.yaml").read_text()))
    service = rendered.one("Service")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    expected = (
        f"outbound|{port}||{service['metadata']['name']}."
        f"{service['metadata']['namespace']}.svc.cluster.local"
    )
    assert (
        parse_ext_proc(istio_filter()["typed_config"]).grpc_service.envoy_grpc.cluster_name
        == expected
    )
    policy = manifest("AuthorizationPolicy")
    assert policy["metadata"]["namespace"] == service["metadata"]["namespace"]
    labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["rules"][0]["to"][0]["operation"]["ports"] == [str(port)]


# Envoy Gateway's API for extProc (gateway.envoyproxy.io/v1alpha1 ExtProc): the fields used.
_BODY_MODES = {
    "Streamed": "STREAMED",
    "Buffered": "BUFFERED",
    "BufferedPartial": "BUFFERED_PARTIAL",
    "FullDuplexStreamed": "FULL_DUPLEX_STREAMED",
}


def as_external_processor(ext: dict[str, Any]) -> ext_proc_pb2.ExternalProcessor:
    """The filter Envoy Gateway builds from one extProc entry (request/response present =>
    their headers are sent; body as given, else none)."""
    allowed = {"backendRefs", "messageTimeout", "failOpen", "processingMode", "metadata"}
    assert set(ext) <= allowed, set(ext) - allowed
    (ref,) = ext["backendRefs"]
    assert ref.get("kind", "Service") == "Service" and ref.get("group", "") == ""
    mode = ext["processingMode"]
    assert set(mode) <= {"request", "response", "allowModeOverride"}

    def phase(name: str) -> dict[str, str]:
        options = mode.get(name)
        if options is None:
            return {f"{name}_header_mode": "SKIP"}
        assert set(options) <= {"body", "attributes"}
        body = _BODY_MODES[options["body"]] if "body" in options else "NONE"
        return {f"{name}_header_mode": "SEND", f"{name}_body_mode": body}

    return parse_ext_proc(
        {
            "@type": EXT_PROC_TYPE,
            "grpc_service": {"envoy_grpc": {"cluster_name": "extproc"}},
            "message_timeout": ext["messageTimeout"],
            "failure_mode_allow": ext.get("failOpen", False),
            "allow_mode_override": mode.get("allowModeOverride", False),
            "processing_mode": {**phase("request"), **phase("response")},
            "metadata_options": {
                "receiving_namespaces": {"untyped": ext["metadata"]["writableNamespaces"]}
            },
        }
    )


def test_envoy_gateway_policy_asks_what_ours_asks(render: Callable[..., Rendered]) -> None:
    policy = manifest("EnvoyExtensionPolicy")
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    (ext,) = policy["spec"]["extProc"]
    theirs = as_external_processor(ext)
    mine = ours()
    assert phases(theirs) == phases(mine)
    assert theirs.allow_mode_override and not theirs.failure_mode_allow
    assert theirs.message_timeout == mine.message_timeout
    assert (
        theirs.metadata_options.receiving_namespaces == mine.metadata_options.receiving_namespaces
    )
    # It names the chart's processor Service, and a ReferenceGrant lets it.
    rendered = render(yaml.safe_load((MESH / "envoy-gateway" / "values.yaml").read_text()))
    service = rendered.one("Service")
    (ref,) = ext["backendRefs"]
    assert (ref["name"], ref["namespace"]) == (
        service["metadata"]["name"],
        service["metadata"]["namespace"],
    )
    assert ref["port"] in {p["port"] for p in service["spec"]["ports"]}
    grant = manifest("ReferenceGrant")
    assert grant["metadata"]["namespace"] == ref["namespace"]
    assert grant["spec"]["from"] == [
        {
            "group": "gateway.envoyproxy.io",
            "kind": "EnvoyExtensionPolicy",
            "namespace": policy["metadata"]["namespace"],
        }
    ]
    (target,) = policy["spec"]["targetRefs"]
    gateway = manifest("Gateway", "envoy-gateway")
    assert (target["kind"], target["name"]) == ("Gateway", gateway["metadata"]["name"])
    assert gateway["metadata"]["namespace"] == policy["metadata"]["namespace"]


def test_envoy_gateway_routes_and_tls_cover_each_provider() -> None:
    objects = documents(MESH / "envoy-gateway" / "egress.yaml")
    backends = {
        d["metadata"]["name"]: d["spec"]["endpoints"][0]["fqdn"]["hostname"]
        for d in objects
        if d["kind"] == "Backend"
    }
    checked = {}
    for policy in (d for d in objects if d["kind"] == "BackendTLSPolicy"):
        (target,) = policy["spec"]["targetRefs"]
        if target["kind"] == "Backend":
            checked[target["name"]] = policy["spec"]["validation"]["hostname"]
    # Each backend's certificate is checked against its own host name.
    assert checked == backends
    routes = {
        d["spec"]["hostnames"][0]: d["spec"]["rules"][0]["backendRefs"][0]["name"]
        for d in objects
        if d["kind"] == "HTTPRoute"
    }
    assert {host: backends[name] for host, name in routes.items()} == {h: h for h in routes}


def test_envoy_gateway_presents_the_certificate_the_processor_allows(
    render: Callable[..., Rendered],
) -> None:
    values = yaml.safe_load((MESH / "envoy-gateway" / "values.yaml").read_text())
    assert values["processor"]["authentication"] == "mtls"
    objects = documents(MESH / "envoy-gateway" / "egress.yaml")
    certificates = [d for d in objects if d["kind"] == "Certificate"]
    gateway = manifest("Gateway", "envoy-gateway")
    reference = gateway["spec"]["tls"]["backend"]["clientCertificateRef"]
    (client,) = [c for c in certificates if c["spec"]["secretName"] == reference["name"]]
    assert client["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    assert client["spec"]["uris"] and set(client["spec"]["uris"]) <= set(
        values["processor"]["tls"]["allowedPeers"]
    )
    service = render(values).one("Service")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    secret = values["processor"]["tls"]["secretName"]
    (server,) = [c for c in certificates if c["spec"]["secretName"] == secret]
    assert server["metadata"]["namespace"] == namespace
    # One CA issues both: the processor's ca.crt checks the Gateway's certificate.
    assert server["spec"]["issuerRef"] == client["spec"]["issuerRef"]
    (policy,) = [
        d
        for d in objects
        if d["kind"] == "BackendTLSPolicy" and d["spec"]["targetRefs"][0]["kind"] == "Service"
    ]
    assert policy["metadata"]["namespace"] == namespace
    assert policy["spec"]["targetRefs"] == [{"group": "", "kind": "Service", "name": name}]
    hostname = policy["spec"]["validation"]["hostname"]
    assert hostname == f"{name}.{namespace}.svc" and hostname in server["spec"]["dnsNames"]


def test_istio_processor_is_authenticated_by_the_mesh(render: Callable[..., Rendered]) -> None:
    values = yaml.safe_load((MESH / "istio" / "values.yaml").read_text())
    assert values["processor"]["authentication"] == "mesh"
    rendered = render(values)
    service = rendered.one("Service")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["sidecar.istio.io/inject"] == "true"
    peer = manifest("PeerAuthentication")
    assert peer["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert peer["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert peer["spec"]["portLevelMtls"][port] == {"mode": "STRICT"}


def test_the_parsers_reject_what_envoy_would_reject() -> None:
    """The checks above can fail: a misspelt field or a wrong enum does not parse."""
    typed = dict(istio_filter()["typed_config"])
    with pytest.raises(json_format.ParseError):
        parse_ext_proc({**typed, "failure_mode_alow": False})
    with pytest.raises(json_format.ParseError):
        parse_ext_proc({**typed, "processing_mode": {"request_body_mode": "BUFFER"}})
    (ext,) = manifest("EnvoyExtensionPolicy")["spec"]["extProc"]
    with pytest.raises(KeyError):
        as_external_processor({**ext, "processingMode": {"request": {"body": "Buffer"}}})


# -- the filter in a running Envoy ------------------------------------------------------


def egress_envoy(
    filter_value: dict[str, Any],
    grpc_port: int,
    mock_port: int,
    port: int,
    admin: int,
    tls: dict[str, Any] | None = None,
    access_log: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An Envoy shaped like an egress gateway: routes by the host the app called, with the
    EnvoyFilter's ext_proc filter before the router, its cluster name as Istio names it;
    with tls, the transport socket of that cluster; with access_log, those loggers."""
    cluster_name = filter_value["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    address = lambda p: {"socket_address": {"address": "127.0.0.1", "port_value": p}}  # noqa: E731

    def upstream(name: str, target: int, http2: bool = False) -> dict[str, Any]:
        cluster: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(target)}}]}],
            },
        }
        if http2:
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        return cluster

    def host(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "domains": [name, f"{name}:*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name, "timeout": "30s"}}],
        }

    return {
        "admin": {"address": address(admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "egress",
                    "address": address(port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "egress",
                                        "access_log": access_log or [],
                                        "route_config": {
                                            "virtual_hosts": [
                                                host("api.openai.com"),
                                                host("api.anthropic.com"),
                                            ]
                                        },
                                        "http_filters": [
                                            filter_value,
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            },
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    **upstream(cluster_name, grpc_port, http2=True),
                    **({"transport_socket": tls} if tls else {}),
                },
                upstream("api.openai.com", mock_port),
                upstream("api.anthropic.com", mock_port),
            ],
        },
    }


@contextlib.contextmanager
def egress_gateway(
    tmp_path: Path,
    grpc_port: int,
    mock_port: int,
    tls: dict[str, Any] | None = None,
    access_logs: dict[str, dict[str, str]] | None = None,
) -> Iterator[str]:
    """The egress Envoy running the EnvoyFilter's filter; its base URL. access_logs: name
    -> JSON format, each written to <name>.log in tmp_path (complete once this exits)."""
    port, admin = free_port(), free_port()
    bootstrap = tmp_path / "egress.yaml"
    loggers = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(tmp_path / f"{name}.log"),
                "log_format": {"json_format": log_format},
            },
        }
        for name, log_format in (access_logs or {}).items()
    ]
    bootstrap.write_text(
        yaml.safe_dump(
            egress_envoy(istio_filter(), grpc_port, mock_port, port, admin, tls, loggers)
        )
    )
    envoy = subprocess.Popen(
        [envoy_binary(), "-c", str(bootstrap), "--disable-hot-restart", "-l", "error"],
        stdout=(tmp_path / "envoy.log").open("wb"),
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, 30, "egress envoy", envoy)
        yield f"http://127.0.0.1:{port}"
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)


def processor_pod(
    rendered: Rendered, tmp_path: Path, secrets: dict[str, dict[str, str]] | None = None
) -> tuple[Pod, dict[str, Any]]:
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    maps = config_maps(rendered, rendered.one("Deployment")["metadata"]["namespace"])
    return Pod(spec, tmp_path / "pod", maps, {**SECRETS, **(secrets or {})}), spec


def test_an_egress_gateway_with_the_filter_is_served_by_the_processor_pod(
    render: Callable[..., Rendered], mock_port: int, tmp_path: Path
) -> None:
    """Istio's values (the mesh authenticates the callers, so no TLS here): this Envoy,
    like an egress gateway, sends each provider host to its provider (here the mock)."""
    values = local_values(yaml.safe_load((MESH / "istio" / "values.yaml").read_text()))
    pod, spec = processor_pod(render(values), tmp_path)
    access_logs = {
        "istio": istio_access_log(),
        "envoy-gateway": envoy_gateway_access_log(),
        # How Istio's and Envoy Gateway's default formats write the path.
        "default": {"path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "status": "%RESPONSE_CODE%"},
    }
    grpc_port = values["ports"]["grpc"]
    with (
        pod.run(spec["containers"]),
        egress_gateway(tmp_path, grpc_port, mock_port, access_logs=access_logs) as base,
    ):
        call_through_egress(base)
        call_with_a_key_in_the_query(base)
    assert "sk-pod-" not in pod.logs()
    # The manifests' formats log every request without its query, refused ones too.
    for name in ("istio", "envoy-gateway"):
        text = (tmp_path / f"{name}.log").read_text()
        assert QUERY_KEY not in text
        lines = [json.loads(line) for line in text.splitlines()]
        assert {(line["path"], str(line["status"])) for line in lines} >= {
            ("/v1/chat/completions", "200"),
            ("/v1/chat/completions", "421"),
            ("/v1/nowhere", "404"),
        }
        assert {line["authority"] for line in lines} == {"api.openai.com", "api.anthropic.com"}
    # The check can fail: the defaults' way writes the key of the request refused at its
    # headers. Requests that reach the body phase lost the key from their path there.
    default = (tmp_path / "default.log").read_text()
    assert f"/v1/nowhere?key={QUERY_KEY}" in default
    assert default.count(QUERY_KEY) == 1


QUERY_KEY = "sk-client-key-in-the-query"


def call_with_a_key_in_the_query(base: str) -> None:
    """Requests carrying a key as "?key=", the way some SDKs send Google's: one served,
    one the service refuses after reading its body (421), one it refuses at once (404)."""
    client = openai.OpenAI(
        base_url=f"{base}/v1",
        api_key="unused",
        max_retries=0,
        default_headers={"Host": "api.openai.com"},
        default_query={"key": QUERY_KEY},
    )
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "key in the query"}]
    )
    assert reply.choices[0].message.content == "key in the query"
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="claude-3-5-haiku-latest", messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.status_code == 421
    request = urllib.request.Request(
        f"{base}/v1/nowhere?key={QUERY_KEY}", headers={"Host": "api.openai.com"}
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 404


def test_an_envoy_with_an_allowed_certificate_is_served_by_the_mtls_processor_pod(
    render: Callable[..., Rendered], mock_port: int, tmp_path: Path
) -> None:
    """Envoy Gateway's values: the pod's ext_proc port requires a client certificate for
    an allowed name. The egress Envoy presents one and is served; clients without one, or
    with one for another name from the same CA, are refused."""
    values = local_values(yaml.safe_load((MESH / "envoy-gateway" / "values.yaml").read_text()))
    (allowed,) = values["processor"]["tls"]["allowedPeers"]
    name = f"extproc.{NAMESPACE}.svc"
    ca = trustme.CA()
    certs = tmp_path / "certs"
    certs.mkdir()
    issue_certificate(ca, certs, "service", dns=(name,))
    issue_certificate(ca, certs, "egress", uris=(allowed,))
    issue_certificate(ca, certs, "stranger", uris=("spiffe://cluster.local/ns/apps/sa/app",))
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))
    secret = {
        "tls.crt": (certs / "service.pem").read_text(),
        "tls.key": (certs / "service.key").read_text(),
        "ca.crt": (certs / "ca.pem").read_text(),
    }
    pod, spec = processor_pod(
        render(values), tmp_path, {values["processor"]["tls"]["secretName"]: secret}
    )
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(certs / "egress.pem")},
                        "private_key": {"filename": str(certs / "egress.key")},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(certs / "ca.pem")},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": name}}
                    ],
                },
            },
        },
    }
    grpc_port = values["ports"]["grpc"]
    with pod.run(spec["containers"]), egress_gateway(tmp_path, grpc_port, mock_port, tls) as base:
        call_through_egress(base)
        for stem in (None, "stranger"):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(certs / "ca.pem").read_bytes(),
                private_key=(certs / f"{stem}.key").read_bytes() if stem else None,
                certificate_chain=(certs / f"{stem}.pem").read_bytes() if stem else None,
            )
            options = [("grpc.ssl_target_name_override", name)]
            target = f"127.0.0.1:{grpc_port}"
            with (
                grpc.secure_channel(target, credentials, options) as channel,
                pytest.raises(grpc.RpcError) as refused,
            ):
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        call_through_egress(base)  # still served
    logs = pod.logs()
    assert "sk-pod-" not in logs and "PRIVATE KEY" not in logs
    assert "grpc_peer_refused" in logs and "spiffe://cluster.local/ns/apps/sa/app" in logs


def call_through_egress(base: str) -> None:
    """What an app in the mesh does; the mesh brings its provider-host requests here."""
    # The app calls the provider's host; the mesh brings it to the egress gateway.
    to_openai = openai.OpenAI(
        base_url=f"{base}/v1",
        api_key="unused",
        max_retries=0,
        default_headers={"Host": "api.openai.com"},
    )
    raw = to_openai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "out of the mesh"}]
    )
    assert raw.parse().choices[0].message.content == "out of the mesh"
    assert raw.headers["x-mock-host"] == "api.openai.com"
    assert (
        raw.headers["x-mock-authorization-sha256"]
        == hashlib.sha256(b"Bearer sk-pod-openai").hexdigest()
    )
    # A model of another provider at this host: refused before any key is added.
    with pytest.raises(openai.APIStatusError) as refused:
        to_openai.chat.completions.create(
            model="claude-3-5-haiku-latest", messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.status_code == 421
    assert refused.value.body["code"] == "misdirected_request"  # type: ignore[index]
    to_anthropic = anthropic.Anthropic(
        base_url=base,
        api_key="unused",
        max_retries=0,
        default_headers={"Host": "api.anthropic.com"},
    )
    reply = to_anthropic.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=20,
        messages=[{"role": "user", "content": "also out"}],
    )
    assert reply.content[0].text == "also out"  # type: ignore[union-attr]
