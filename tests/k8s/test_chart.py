"""The Helm chart: every values profile renders, lints strictly, and every object it
renders is valid for the oldest and newest Kubernetes the chart supports."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from extproc.control.inject import INJECT_LABEL, InjectorConfig
from tests.k8s.conftest import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    PROFILES,
    Rendered,
    config_files,
    deep_merge,
    pod_specs,
    profile_values,
    write,
)
from tests.k8s.test_injector import inject

GRPC_TLS_PATH = "/etc/extproc-grpc-tls"
# Objects of APIs that ship as CRDs (their schemas live in those projects' clusters).
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}


def test_profiles_cover_every_mode() -> None:
    modes = {profile_values(p).get("mode") for p in PROFILES}
    assert modes == {"gateway", "sidecar", "processor"}


@pytest.mark.parametrize("profile", PROFILES)
def test_lint_is_clean_in_strict_mode(profile: str) -> None:
    for version in KUBE_VERSIONS:
        report = helm.lint(
            CHART,
            profile_values(profile),
            strict=True,
            namespace=NAMESPACE,
            kube_version=f"v{version}",
        )
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert problems == [] and report["errors"] == [], report


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_is_valid_for_oldest_and_newest_kubernetes(
    profile: str, render: Callable[..., Rendered]
) -> None:
    rendered = render(profile_values(profile))
    assert rendered.objects
    for path, document in rendered.objects:
        if (document["apiVersion"], document["kind"]) in CRD_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{path} {document['kind']} invalid for {version}: {error.message}")


def test_validation_catches_a_misspelt_field(render: Callable[..., Rendered]) -> None:
    """The check above can fail: an unknown container field is refused."""
    deployment = render(profile_values("gateway")).one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"mode": "mesh"}, "/mode"),
        ({"ports": {"http": 70000}}, "/ports/http"),
        ({"replicaCount": 3}, "replicaCount"),
        ({"injector": {"certificate": {"source": "self"}}}, "/injector/certificate/source"),
        ({"config": {"models": []}}, "/config/models"),
        ({"processor": {"authentication": "none"}}, "/processor/authentication"),
        ({"processor": {"tls": {"allowedPeers": [""]}}}, "/processor/tls/allowedPeers"),
    ],
    ids=[
        "mode",
        "port",
        "unknown-key",
        "certificate-source",
        "no-models",
        "authentication",
        "empty-peer",
    ],
)
def test_values_schema_refuses_bad_values(
    values: dict[str, object], where: str, chart: helm.Chart
) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.render(values, name="extproc", namespace=NAMESPACE)


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_run_restricted(profile: str, render: Callable[..., Rendered]) -> None:
    """Non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp, no
    service account token: in every pod the chart makes, and in the injected sidecars."""
    rendered = render(profile_values(profile))
    containers = []
    for name, spec in pod_specs(rendered):
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        containers += spec["containers"]
    for config in _injector_configs(rendered):
        containers.append({"name": "sidecars", "securityContext": config.security_context})
    assert containers
    for container in containers:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def _injector_configs(rendered: Rendered) -> list[InjectorConfig]:
    return [
        InjectorConfig.from_dict(yaml.safe_load(c["data"]["injector.yaml"]))
        for c in rendered.all("ConfigMap")
        if "injector.yaml" in c["data"]
    ]


@pytest.mark.parametrize("profile", PROFILES)
def test_service_configs_load_and_their_envoy_config_validates(
    profile: str, render: Callable[..., Rendered], tmp_path: Path
) -> None:
    """Each config.yaml the chart ships loads, and the Envoy bootstrap that the Envoy
    container's own command renders from it passes `envoy --mode validate`."""
    files = config_files(render(profile_values(profile)))
    assert files
    for name, text in files.items():
        # The ext_proc port's Secret, where the pod mounts it.
        secret = tmp_path / name / "grpc-tls"
        for file in ("tls.crt", "tls.key", "ca.crt"):
            write(secret / file, "")
        text = text.replace(GRPC_TLS_PATH, str(secret))
        config = write(tmp_path / name / "config.yaml", text)
        check = subprocess.run(
            [sys.executable, "-m", "extproc", "check-config", "--skip-secrets", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        if profile_values(profile).get("mode") == "processor":
            continue  # no Envoy in that pod
        workdir = tmp_path / name / "run"
        validate = subprocess.run(
            [
                sys.executable,
                "-m",
                "extproc",
                "envoy",
                str(config),
                "--workdir",
                str(workdir),
                "--",
                "--mode",
                "validate",
                "-l",
                "error",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert validate.returncode == 0, validate.stdout + validate.stderr
        bootstrap = yaml.safe_load((workdir / "envoy.yaml").read_text())
        listeners = {item["name"] for item in bootstrap["static_resources"]["listeners"]}
        assert listeners == {"gateway", "readiness"}


def _ports_of(spec: dict[str, object]) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in spec["containers"]  # type: ignore[attr-defined]
        for p in c.get("ports", [])
    }


def test_gateway_probes_and_service_match_the_config(render: Callable[..., Rendered]) -> None:
    rendered = render(profile_values("gateway"))
    config = yaml.safe_load(config_files(rendered)[f"{NAMESPACE}/extproc"])
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    service, envoy = spec["containers"]
    health_port = int(config["service"]["health_address"].rpartition(":")[2])
    ready_port = int(config["admin"]["readiness_address"].rpartition(":")[2])
    assert service["args"] == ["serve", "/etc/extproc/config.yaml"]
    assert envoy["args"][:2] == ["envoy", "/etc/extproc/config.yaml"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert service[probe]["grpc"]["port"] == health_port
    for probe in ("startupProbe", "readinessProbe"):
        assert envoy[probe]["httpGet"] == {"path": "/ready", "port": ready_port}
    # The socket the service binds is on the volume Envoy mounts too.
    assert config["service"]["grpc_address"] == "unix:///var/run/extproc/extproc.sock"
    mounts = [{m["mountPath"] for m in c["volumeMounts"]} for c in (service, envoy)]
    assert all("/var/run/extproc" in m for m in mounts)
    ports = _ports_of(spec)
    assert ports["http"] == config["listener"]["port"]
    assert config["listener"]["address"] == "0.0.0.0"
    assert config["admin"]["address"] == "127.0.0.1"
    svc = rendered.one("Service")
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()


def test_processor_mode_offers_ext_proc_to_other_envoys(render: Callable[..., Rendered]) -> None:
    values = profile_values("processor")
    rendered = render(values)
    config = yaml.safe_load(config_files(rendered)[f"{NAMESPACE}/extproc"])
    assert config["service"]["external_envoy"] is True
    assert config["service"]["grpc_address"] == "0.0.0.0:50051"
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["serve", "/etc/extproc/config.yaml"]
    # mTLS: the Secret's files where the config names them, the allowed callers.
    assert config["service"]["grpc_tls"] == {
        "cert_file": f"{GRPC_TLS_PATH}/tls.crt",
        "key_file": f"{GRPC_TLS_PATH}/tls.key",
        "client_ca_file": f"{GRPC_TLS_PATH}/ca.crt",
        "allowed_peers": values["processor"]["tls"]["allowedPeers"],
    }
    assert "unauthenticated_grpc" not in config["service"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == GRPC_TLS_PATH]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == values["processor"]["tls"]["secretName"]
    svc = rendered.one("Service")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    grpc = ports["grpc"]
    assert (grpc["port"], grpc["appProtocol"]) == (50051, "grpc")
    # helm test asks the health-only port (plaintext, no secret), not the ext_proc port.
    assert rendered.one("Pod")["spec"]["containers"][0]["args"][1] == (
        f"grpc://extproc.{NAMESPACE}.svc:{ports['health']['port']}"
    )
    policy = rendered.one("NetworkPolicy")
    ext_proc_rule, health_rule = policy["spec"]["ingress"][:2]
    assert ext_proc_rule["ports"] == [{"port": 50051, "protocol": "TCP"}]
    assert ext_proc_rule["from"] == values["networkPolicy"]["allowFrom"]
    assert health_rule == {
        "from": [{"podSelector": {}}],
        "ports": [{"port": ports["health"]["port"], "protocol": "TCP"}],
    }


@pytest.mark.parametrize(
    ("processor", "message"),
    [
        ({}, "processor mode: set processor.authentication: mtls"),
        (
            {"authentication": "mtls"},
            "needs processor.tls.secretName and processor.tls.allowedPeers",
        ),
        (
            {"authentication": "mtls", "tls": {"secretName": "s"}},
            "needs processor.tls.secretName and processor.tls.allowedPeers",
        ),
    ],
    ids=["no-authentication", "mtls-without-secret", "mtls-without-peers"],
)
def test_processor_mode_without_caller_authentication_is_refused(
    processor: dict[str, object], message: str, render: Callable[..., Rendered]
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render({"mode": "processor", "processor": processor})


@pytest.mark.parametrize("authentication", ["mesh", "insecure-none"])
def test_processor_mode_says_so_when_another_layer_or_nobody_authenticates(
    authentication: str, render: Callable[..., Rendered]
) -> None:
    rendered = render({"mode": "processor", "processor": {"authentication": authentication}})
    config = yaml.safe_load(config_files(rendered)[f"{NAMESPACE}/extproc"])
    assert config["service"]["unauthenticated_grpc"] is True
    assert "grpc_tls" not in config["service"]
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert not [v for v in spec["volumes"] if "secret" in v]


def test_default_values_give_no_one_anonymous_use_of_the_provider_keys(
    render: Callable[..., Rendered],
) -> None:
    """The defaults: no anonymous tenant, and a NetworkPolicy admitting only the
    release's namespace to the gateway's port."""
    rendered = render({})
    config = yaml.safe_load(config_files(rendered)[f"{NAMESPACE}/extproc"])
    assert not config.get("auth", {}).get("anonymous_tenant")
    assert config["tenants"] == []
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    gateway_rule = policy["ingress"][0]
    assert gateway_rule == {
        "from": [{"podSelector": {}}],  # pods of the policy's own namespace
        "ports": [{"port": 10000, "protocol": "TCP"}],
    }
    assert policy["podSelector"]["matchLabels"].items() <= (
        rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_network_policy_follows_the_mode_unless_set(render: Callable[..., Rendered]) -> None:
    processor = {"mode": "processor", "processor": {"authentication": "mesh"}}
    assert "NetworkPolicy" in render(processor).kinds()
    assert "NetworkPolicy" not in render({"mode": "sidecar"}).kinds()
    assert "NetworkPolicy" not in render({"networkPolicy": {"enabled": False}}).kinds()
    assert (
        "NetworkPolicy" in render({"mode": "sidecar", "networkPolicy": {"enabled": True}}).kinds()
    )
    # No peers listed: nobody may call (a rule without peers would admit everyone).
    closed = render({"networkPolicy": {"allowFrom": []}}).one("NetworkPolicy")["spec"]
    assert all(rule.get("from") for rule in closed["ingress"])
    assert {p["port"] for rule in closed["ingress"] for p in rule["ports"]} == {9464}


def egress(rendered: Rendered) -> list[dict[str, object]]:
    """The NetworkPolicy's egress rules after the DNS one every policy starts with."""
    dns, *rules = rendered.one("NetworkPolicy")["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    return rules  # type: ignore[no-any-return]


def tcp(*ports: int) -> dict[str, object]:
    return {"ports": [{"port": port, "protocol": "TCP"} for port in ports]}


def test_network_policy_allows_the_ports_the_config_connects_to(
    render: Callable[..., Rendered],
) -> None:
    """A backend on another port than 443 (vLLM's 8000) or Redis left out of egress would
    time out (for the budget store: 503 budget_unavailable). The config's ports that
    networkPolicy.egress does not name get a rule; the ones it names are left as
    written, to the peers it says."""
    full = profile_values("gateway-full")
    assert egress(render(full)) == [*full["networkPolicy"]["egress"], tcp(6379, 6380, 8000)]
    # The Envoy calling a processor calls the backends; the processor calls Redis alone.
    processor = profile_values("processor")
    assert egress(render(processor)) == processor["networkPolicy"]["egress"]
    vllm = {"name": "vllm", "url": "http://vllm.models.svc:8000/v1"}
    with_vllm = deep_merge(processor, {"config": {"backends": [vllm]}})
    assert egress(render(with_vllm)) == processor["networkPolicy"]["egress"]
    assert egress(render(deep_merge(full, {"mode": "gateway", "config": {"backends": [vllm]}})))[
        -1
    ] == tcp(6379, 6380, 8000)
    # The defaults: https providers, on the 443 egress allows.
    assert egress(render({})) == [tcp(443)]


def test_egress_ports_come_from_each_url_of_the_config(render: Callable[..., Rendered]) -> None:
    config = {
        "backends": [
            {"name": "a", "url": "http://[fd00::1]:8001/v1"},
            {"name": "b", "url": "HTTP://plain.example/v1"},
            {"name": "c", "url": "https://tls.example:8443/v1"},
            {"name": "d", "url": "https://api.openai.com/v1"},
        ],
        "accounting": {"store": {"redis": {"url": "rediss://:secret@redis.example/0"}}},
        "cache": {"redis": {"url": "unix:///run/redis/redis.sock"}},
    }
    assert egress(render({"config": config})) == [tcp(443), tcp(80, 6379, 8001, 8443)]


@pytest.mark.parametrize(
    ("rules", "added"),
    [
        ([{"ports": [{"port": 6379}]}], []),
        ([{"ports": [{"port": 6000, "endPort": 7000, "protocol": "TCP"}]}], []),
        ([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}], []),
        ([{"ports": [{"protocol": "TCP"}]}], []),
        ([{"ports": [{"port": 6379, "protocol": "UDP"}]}], [6379]),
        ([{"ports": [{"port": 6380, "endPort": 7000}]}], [6379]),
        ([{"ports": [{"port": "redis"}]}], [6379]),
        ([], [6379]),
    ],
    ids=[
        "port",
        "range",
        "all-ports-to-peers",
        "all-tcp-ports",
        "udp-only",
        "range-above",
        "named-port",
        "none",
    ],
)
def test_a_port_egress_allows_is_not_added_again(
    rules: list[dict[str, object]], added: list[int], render: Callable[..., Rendered]
) -> None:
    values = {
        "mode": "processor",
        "processor": {"authentication": "mesh"},
        "networkPolicy": {"egress": rules},
        "config": {"accounting": {"store": {"redis": {"url": "redis://redis:6379/0"}}}},
    }
    assert egress(render(values)) == rules + ([tcp(*added)] if added else [])


def test_without_egress_from_config_a_port_egress_does_not_allow_fails_the_render(
    render: Callable[..., Rendered],
) -> None:
    values = {
        "networkPolicy": {"egressFromConfig": False},
        "config": {"backends": [{"name": "vllm", "url": "http://vllm.models.svc:8000/v1"}]},
    }
    with pytest.raises(
        helm.HelmError,
        match=r"networkPolicy.egress allows no TCP port 8000, which config.backends\[0\].url",
    ):
        render(values)
    rule = {"to": [{"namespaceSelector": {}}], "ports": [{"port": 8000, "protocol": "TCP"}]}
    allowed = deep_merge(values, {"networkPolicy": {"egress": [rule]}})
    assert egress(render(allowed)) == [rule]


def test_user_config_is_kept_and_addresses_are_the_charts(render: Callable[..., Rendered]) -> None:
    values = profile_values("gateway-full")
    rendered = render(values)
    config = yaml.safe_load(config_files(rendered)[f"{NAMESPACE}/extproc"])
    assert config["models"] == values["config"]["models"]
    assert config["service"]["message_timeout"] == "5s"  # the user's, next to the chart's
    assert config["service"]["health_address"] == "0.0.0.0:10002"
    containers = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert containers[0]["envFrom"] == [{"secretRef": {"name": "llm-provider-keys"}}]
    assert containers[0]["env"] == values["extraEnv"]
    assert containers[0]["image"] == "extproc/extproc:0.1.0-test"
    # Extra volumes (here a credential file the config names) reach both containers.
    for container in containers:
        assert values["extraVolumeMounts"][0] in container["volumeMounts"]
    pod_volumes = rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert values["extraVolumes"][0] in pod_volumes


def test_a_config_change_rolls_the_pods(render: Callable[..., Rendered]) -> None:
    def checksum(values: dict[str, object]) -> str:
        template = render(values).one("Deployment")["spec"]["template"]
        return str(template["metadata"]["annotations"]["checksum/config"])

    base = profile_values("gateway")
    changed = deep_merge(base, {"config": {"tenants": [{"name": "other"}]}})
    assert checksum(base) != checksum(changed)
    assert checksum(base) == checksum(dict(base))


def test_optional_objects_follow_values(render: Callable[..., Rendered]) -> None:
    plain = render(profile_values("gateway"))
    full = render(profile_values("gateway-full"))
    for kind in ("ServiceMonitor", "HorizontalPodAutoscaler"):
        assert kind not in plain.kinds()
        assert kind in full.kinds()
    assert plain.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert "PodDisruptionBudget" not in render(profile_values("sidecar-containers")).kinds()
    # With the autoscaler on, the Deployment leaves the replica count to it.
    assert "replicas" not in full.one("Deployment")["spec"]
    assert plain.one("Deployment")["spec"]["replicas"] == 2
    hpa = full.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 6)
    assert hpa["scaleTargetRef"]["name"] == full.one("Deployment")["metadata"]["name"]
    monitor = full.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # Sidecars have no Service: pods labelled for injection are scraped instead.
    pod_monitor = render(profile_values("sidecar")).one("PodMonitor")["spec"]
    assert pod_monitor["selector"]["matchLabels"] == {INJECT_LABEL: "true"}
    assert pod_monitor["podMetricsEndpoints"][0]["port"] == "extproc-metrics"


def test_sidecar_mode_puts_the_config_in_every_app_namespace(
    render: Callable[..., Rendered],
) -> None:
    values = profile_values("sidecar")
    rendered = render(values)
    files = config_files(rendered)
    assert set(files) == {f"{ns}/extproc-sidecar" for ns in values["injector"]["namespaces"]}
    for text in files.values():
        config = yaml.safe_load(text)
        assert config["listener"]["address"] == "127.0.0.1"  # the pod's own apps only
    (injector_config,) = _injector_configs(rendered)
    assert injector_config.namespace == NAMESPACE
    assert injector_config.config_map == "extproc-sidecar"
    assert injector_config.secret == "llm-provider-keys"
    assert injector_config.native_sidecars is True
    assert "Deployment" in rendered.kinds() and "Service" in rendered.kinds()
    assert not [d for d in rendered.all("Deployment") if d["metadata"]["name"] == "extproc"]


def test_webhook_selects_labelled_pods_outside_its_namespace(
    render: Callable[..., Rendered],
) -> None:
    rendered = render(profile_values("sidecar"))
    (webhook,) = rendered.one("MutatingWebhookConfiguration")["webhooks"]
    assert webhook["objectSelector"] == {"matchLabels": {INJECT_LABEL: "true"}}
    (expression,) = webhook["namespaceSelector"]["matchExpressions"]
    assert expression["operator"] == "NotIn" and NAMESPACE in expression["values"]
    assert webhook["rules"][0]["operations"] == ["CREATE"]
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "None"
    service = webhook["clientConfig"]["service"]
    svc = rendered.one("Service", service["name"])
    assert service["namespace"] == NAMESPACE and service["path"] == "/inject"
    (port,) = svc["spec"]["ports"]
    assert port["port"] == service["port"]
    injector = rendered.one("Deployment", service["name"])["spec"]["template"]["spec"]
    assert _ports_of(injector)[port["targetPort"]] == 8443
    assert injector["containers"][0]["args"][0] == "inject"


def test_generated_certificate_is_trusted_by_the_webhook(render: Callable[..., Rendered]) -> None:
    rendered = render(profile_values("sidecar"))
    (webhook,) = rendered.one("MutatingWebhookConfiguration")["webhooks"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(webhook["clientConfig"]["caBundle"]))
    secret = rendered.one("Secret")
    assert secret["type"] == "kubernetes.io/tls"
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    certificate.verify_directly_issued_by(ca)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    service = webhook["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in names.get_values_for_type(
        x509.DNSName
    )
    mounted = rendered.one("Deployment", service["name"])["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": secret["metadata"]["name"]}} in mounted


def test_cert_manager_issues_the_certificate_when_chosen(render: Callable[..., Rendered]) -> None:
    rendered = render(profile_values("sidecar-cert-manager"))
    assert "Secret" not in rendered.kinds()
    certificate = rendered.one("Certificate")
    config = rendered.one("MutatingWebhookConfiguration")
    (webhook,) = config["webhooks"]
    assert "caBundle" not in webhook["clientConfig"]
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{certificate['metadata']['name']}"
    )
    service = webhook["clientConfig"]["service"]
    assert f"{service['name']}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == rendered.one("Issuer")["metadata"]["name"]


def test_auto_certificate_without_cert_manager_is_generated(
    render: Callable[..., Rendered],
) -> None:
    values = deep_merge(
        profile_values("sidecar"), {"injector": {"certificate": {"source": "auto"}}}
    )
    rendered = render(values)
    assert "Certificate" not in rendered.kinds()
    assert rendered.one("Secret")["type"] == "kubernetes.io/tls"
    assert "certificate: generated" in rendered.notes


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_test_pod_exists_and_uses_the_image_entrypoint(
    profile: str, render: Callable[..., Rendered]
) -> None:
    rendered = render(profile_values(profile))
    (pod,) = rendered.all("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"][0] == "probe"
    assert "command" not in container  # the image's entrypoint: extproc
    if (
        profile_values(profile).get("mode") == "sidecar"
        and rendered.all("ConfigMap")
        and pod["metadata"]["labels"].get(INJECT_LABEL) == "true"
    ):
        # The injected pod calls its own sidecar through the variable the injector sets.
        assert container["args"][1] == "$(OPENAI_BASE_URL)/models"
        assert pod["metadata"]["namespace"] == profile_values(profile)["injector"]["namespaces"][0]


def test_notes_tell_how_to_reach_the_gateway(render: Callable[..., Rendered]) -> None:
    notes = render(profile_values("gateway")).notes
    assert f"OPENAI_BASE_URL=http://extproc.{NAMESPACE}.svc:10000/v1" in notes
    assert "helm test extproc" in notes
    warning = render({"mode": "sidecar"}).notes
    assert "injector.namespaces is empty" in warning


def test_sidecar_helm_test_pod_is_injected_and_finds_its_variable(
    render: Callable[..., Rendered],
) -> None:
    rendered = render(profile_values("sidecar"))
    pod = rendered.one("Pod")
    (config,) = _injector_configs(rendered)
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "helm-test",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": pod["metadata"]["namespace"],
            "object": pod,
        },
    }
    injected = inject(review, config)
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(injected, version, strict=True)
    (probe,) = injected["spec"]["containers"]
    assert "OPENAI_BASE_URL" in {e["name"] for e in probe["env"]}
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["extproc", "extproc-envoy"]


def test_gateway_pods_drain_before_they_stop(render: Callable[..., Rendered]) -> None:
    rendered = render(profile_values("gateway"))
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    config = yaml.safe_load(config_files(rendered)[f"{NAMESPACE}/extproc"])
    expected = [
        "extproc",
        "drain",
        "--admin",
        f"http://127.0.0.1:{config['admin']['port']}",
        "--timeout",
        "50",
    ]
    for container in spec["containers"]:  # the service waits for Envoy's drain too
        assert container["lifecycle"]["preStop"]["exec"]["command"] == expected
    assert spec["terminationGracePeriodSeconds"] > 50
    with pytest.raises(helm.HelmError, match="drainSeconds must be below"):
        render({"gateway": {"drainSeconds": 60, "terminationGracePeriodSeconds": 60}})
