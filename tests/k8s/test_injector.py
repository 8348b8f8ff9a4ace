"""The sidecar injector on AdmissionReview fixtures, and `extproc inject` over HTTPS."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import kubernetes_validate
import pytest
import trustme
from cryptography import x509

from extproc.control.inject import (
    INJECT_LABEL,
    STATUS_ANNOTATION,
    InjectorConfig,
    InjectorConfigError,
    Ports,
    _Certificate,
    review,
)
from extproc.control.stack import free_port, wait_until
from tests.helpers import ROOT
from tests.k8s.conftest import KUBE_VERSIONS

DATA = ROOT / "tests" / "data" / "k8s"
CONFIG = InjectorConfig(
    namespace="extproc-system", image="extproc/extproc:0.1.0", secret="llm-provider-keys"
)
FIXTURES = ["review-deployment-pod.json", "review-bare-pod.json"]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


def answer_to(document: dict[str, Any], config: InjectorConfig = CONFIG) -> dict[str, Any]:
    answer, _ = review(json.dumps(document).encode(), config)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    return answer["response"]  # type: ignore[no-any-return]


def inject(document: dict[str, Any], config: InjectorConfig = CONFIG) -> dict[str, Any]:
    """The pod as the API server stores it after applying the injector's patch."""
    response = answer_to(document, config)
    assert response["uid"] == document["request"]["uid"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch", response
    operations = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(document["request"]["object"], operations)  # type: ignore[no-any-return]


def with_pod(document: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    again = copy.deepcopy(document)
    again["request"]["object"] = pod
    return again


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


@pytest.mark.parametrize("name", FIXTURES)
def test_injected_pod_is_valid_for_oldest_and_newest_kubernetes(name: str) -> None:
    pod = inject(fixture(name))
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


@pytest.mark.parametrize("name", FIXTURES)
def test_native_sidecars_start_service_first_then_envoy_then_the_app(name: str) -> None:
    document = fixture(name)
    original = document["request"]["object"]["spec"]
    pod = inject(document)
    spec = pod["spec"]
    service, envoy, *app_inits = spec["initContainers"]
    assert (service["name"], envoy["name"]) == ("extproc", "extproc-envoy")
    assert service["restartPolicy"] == envoy["restartPolicy"] == "Always"
    assert [c["name"] for c in app_inits] == [c["name"] for c in original.get("initContainers", [])]
    assert [c["name"] for c in spec["containers"]] == [c["name"] for c in original["containers"]]
    # Each sidecar holds the next back until it answers its startup probe.
    assert service["startupProbe"]["grpc"] == {"port": Ports().health}
    assert envoy["startupProbe"]["httpGet"] == {"path": "/ready", "port": Ports().readiness}
    assert service["args"] == ["serve", "/etc/extproc/config.yaml"]
    assert envoy["args"][:4] == [
        "envoy",
        "/etc/extproc/config.yaml",
        "--workdir",
        "/var/run/extproc",
    ]
    for sidecar in (service, envoy):
        assert sidecar["image"] == CONFIG.image and "command" not in sidecar
        assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
        assert mounts == {"extproc-config": "/etc/extproc", "extproc-run": "/var/run/extproc"}
    # Only the service holds provider keys.
    assert service["envFrom"] == [{"secretRef": {"name": "llm-provider-keys"}}]
    assert "envFrom" not in envoy
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["extproc-config"]["configMap"] == {"name": "extproc-sidecar"}
    assert volumes["extproc-run"]["emptyDir"]["medium"] == "Memory"
    assert {v["name"] for v in original.get("volumes", [])} < set(volumes)
    status = json.loads(pod["metadata"]["annotations"][STATUS_ANNOTATION])
    assert status["containers"] == ["extproc", "extproc-envoy"] and status["native"] is True


def test_app_containers_call_the_local_envoy() -> None:
    pod = inject(fixture("review-deployment-pod.json"))
    app, worker = pod["spec"]["containers"]
    (migrate,) = pod["spec"]["initContainers"][2:]
    for container in (app, worker, migrate):
        env = env_of(container)
        assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:10000/v1"
        assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:10000"
    # The app's own value is replaced, not duplicated; its other variables stay.
    assert [e["name"] for e in app["env"]].count("OPENAI_BASE_URL") == 1
    assert env_of(app)["LOG_LEVEL"] == "info"
    # Existing annotations are kept next to the status.
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "false"


@pytest.mark.parametrize("name", FIXTURES)
def test_a_second_injection_changes_nothing(name: str) -> None:
    document = fixture(name)
    pod = inject(document)
    response = answer_to(with_pod(document, pod))
    assert response == {"uid": document["request"]["uid"], "allowed": True}


def test_the_injectors_own_namespace_is_skipped() -> None:
    document = fixture("review-bare-pod.json")
    document["request"]["namespace"] = CONFIG.namespace
    assert answer_to(document) == {"uid": document["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["object"]["metadata"]["labels"].pop(INJECT_LABEL),
        lambda r: r["object"]["metadata"]["labels"].update({INJECT_LABEL: "false"}),
        lambda r: r.update(operation="UPDATE"),
        lambda r: r.update(subResource="ephemeralcontainers"),
        lambda r: r.update(kind={"group": "apps", "version": "v1", "kind": "Deployment"}),
    ],
    ids=["unlabelled", "label-false", "update", "subresource", "not-a-pod"],
)
def test_other_requests_pass_untouched(change: Any) -> None:
    document = fixture("review-bare-pod.json")
    change(document["request"])
    assert answer_to(document) == {"uid": document["request"]["uid"], "allowed": True}


def test_ordinary_containers_when_native_sidecars_are_off() -> None:
    config = InjectorConfig(namespace="extproc-system", image="img:1", native_sidecars=False)
    document = fixture("review-deployment-pod.json")
    pod = inject(document, config)
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["extproc", "extproc-envoy", "app", "worker"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["migrate"]
    service, envoy = pod["spec"]["containers"][:2]
    assert "restartPolicy" not in service and "restartPolicy" not in envoy
    # The app containers start only once Envoy answers.
    hook = envoy["lifecycle"]["postStart"]["exec"]["command"]
    assert hook == ["extproc", "probe", "http://127.0.0.1:10001/ready"]
    assert "envFrom" not in service  # no Secret configured
    assert answer_to(with_pod(document, pod), config)["allowed"] is True


def test_annotations_choose_config_map_and_secret_per_pod() -> None:
    document = fixture("review-bare-pod.json")
    document["request"]["object"]["metadata"]["annotations"] = {
        "extproc.io/config": "notebook-gateway",
        "extproc.io/secret": "",
    }
    pod = inject(document)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["extproc-config"]["configMap"]["name"] == "notebook-gateway"
    assert "envFrom" not in pod["spec"]["initContainers"][0]


def test_ports_follow_the_injector_config() -> None:
    config = InjectorConfig(
        namespace="x", image="img:1", ports=Ports(listener=18000, readiness=18001, health=18002)
    )
    pod = inject(fixture("review-bare-pod.json"), config)
    service, envoy = pod["spec"]["initContainers"]
    assert service["readinessProbe"]["grpc"]["port"] == 18002
    assert envoy["readinessProbe"]["httpGet"]["port"] == 18001
    assert env_of(pod["spec"]["containers"][0])["OPENAI_BASE_URL"] == "http://127.0.0.1:18000/v1"


def test_a_pod_with_our_names_is_admitted_with_a_warning_and_not_patched() -> None:
    document = fixture("review-bare-pod.json")
    document["request"]["object"]["spec"]["containers"].append({"name": "extproc", "image": "x"})
    response = answer_to(document)
    assert response["allowed"] is True and "patch" not in response
    assert response["warnings"] == [
        "extproc sidecar not injected: the pod already has a container named extproc"
    ]


def _without_spec(document: dict[str, Any]) -> None:
    del document["request"]["object"]["spec"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "expected an AdmissionReview object"),
        (b'{"kind": "AdmissionReview"}', "request.uid"),
        (
            json.dumps(
                {**fixture("review-bare-pod.json"), "apiVersion": "admission.k8s.io/v1beta1"}
            ).encode(),
            "expected kind AdmissionReview in admission.k8s.io/v1",
        ),
        (
            json.dumps(
                {
                    **fixture("review-bare-pod.json"),
                    "request": {**fixture("review-bare-pod.json")["request"], "object": "pod"},
                }
            ).encode(),
            "request.object is not a pod",
        ),
    ],
    ids=["bad-json", "bad-utf8", "array", "no-uid", "old-api", "object-not-a-pod"],
)
def test_malformed_reviews_get_a_clear_refusal(body: bytes, says: str) -> None:
    answer, outcome = review(body, CONFIG)
    response = answer["response"]
    assert outcome == "refused" and response["allowed"] is False
    assert response["status"]["code"] == 400
    assert response["status"]["message"].startswith("extproc injector: ")
    assert says in response["status"]["message"]


def test_a_pod_without_containers_is_refused_not_crashed() -> None:
    document = fixture("review-bare-pod.json")
    _without_spec(document)
    response = answer_to(document)
    assert response["allowed"] is False
    assert "no spec.containers" in response["status"]["message"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "must be a mapping"),
        ({"namespace": "x"}, "image"),
        (
            {"namespace": "x", "image": "i", "colour": "blue"},
            "unknown injector config keys: colour",
        ),
        ({"namespace": "x", "image": "i", "ports": {"listener": 0}}, "ports.listener"),
        ({"namespace": "x", "image": "i", "ports": {"admin": 1}}, "ports: only"),
        ({"namespace": "x", "image": "i", "resources": {"app": {}}}, "resources: only"),
    ],
)
def test_injector_config_errors_are_named(data: Any, says: str) -> None:
    with pytest.raises(InjectorConfigError, match=says):
        InjectorConfig.from_dict(data)


# -- the HTTPS server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def injector(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("injector")
    authority = trustme.CA()
    server_cert = authority.issue_cert("extproc-injector.extproc-system.svc", "127.0.0.1")
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    server_cert.cert_chain_pems[0].write_to_path(cert)
    server_cert.private_key_pem.write_to_path(key)
    ca = tmp / "ca.crt"
    authority.cert_pem.write_to_path(ca)
    config = tmp / "injector.yaml"
    config.write_text("namespace: extproc-system\nimage: extproc/extproc:0.1.0\n")
    port = free_port()
    log = (tmp / "injector.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extproc",
            "inject",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"https://127.0.0.1:{port}"
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=5)

    def healthy() -> bool:
        try:
            return client.get(f"{url}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, 20, "injector", process)
        yield url, client, tmp / "injector.log"
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_injector_serves_admission_reviews_over_https(injector: Any) -> None:
    url, client, log = injector
    document = fixture("review-deployment-pod.json")
    reply = client.post(f"{url}/inject", json=document)
    assert reply.status_code == 200
    response = reply.json()["response"]
    assert response["allowed"] is True and response["uid"] == document["request"]["uid"]
    pod = jsonpatch.apply_patch(
        document["request"]["object"], json.loads(base64.b64decode(response["patch"]))
    )
    kubernetes_validate.validate(pod, KUBE_VERSIONS[-1], strict=True)
    # Garbage gets a refusal in an AdmissionReview, and the injector keeps serving.
    refused = client.post(f"{url}/inject", content=b"\x00garbage")
    assert refused.status_code == 200 and refused.json()["response"]["allowed"] is False
    assert client.post(f"{url}/inject", json=document).json()["response"]["allowed"] is True

    # One log line per review: identifiers and outcome, never the pod. A line is written
    # at the end of the loop turn that answered, which may come after the client has read.
    def outcomes() -> list[str]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return [line["outcome"] for line in lines if line.get("event") == "admission review"]

    wait_until(lambda: len(outcomes()) >= 3, 5, "the third review's log line")
    assert outcomes() == ["injected", "refused", "injected"]
    assert "registry.example" not in log.read_text()


def test_injector_speaks_only_tls(injector: Any) -> None:
    url, _, _ = injector
    with pytest.raises(httpx.TransportError):
        httpx.post(url.replace("https", "http") + "/inject", content=b"{}", timeout=5)


def test_injector_refuses_to_start_with_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "injector.yaml"
    config.write_text("namespace: x\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "extproc",
            "inject",
            str(config),
            "--tls-cert",
            "a",
            "--tls-key",
            "b",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "image: a non-empty string is required" in result.stderr


def _served_serial(context: ssl.SSLContext, ca: Path) -> int:
    """The serial number of the certificate a server with this context presents."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        connection, _ = listener.accept()
        with (
            contextlib.suppress(ssl.SSLError, OSError),
            context.wrap_socket(connection, server_side=True) as tls,
        ):
            tls.recv(1)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    thread.join(timeout=5)
    listener.close()
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    """cert-manager rewrites the Secret's files; new handshakes get the new pair."""
    authority = trustme.CA()
    ca = tmp_path / "ca.crt"
    authority.cert_pem.write_to_path(ca)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"

    def issue() -> int:
        issued = authority.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        return x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).serial_number

    first = issue()
    certificate = _Certificate(cert, key)
    assert not certificate.refresh()  # nothing changed
    assert _served_serial(certificate.context, ca) == first
    second = issue()
    os.utime(cert, (time.time() + 5, time.time() + 5))  # a new modification time, always
    assert certificate.refresh()
    assert _served_serial(certificate.context, ca) == second
